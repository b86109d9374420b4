"""A3 graded tests: training and fine-tuning. AdamW, the warm-up/decay schedule and global-norm
clipping on small float64 parameter dicts; the QA head and the QA loss in float64 on a one-layer
model; answer decoding on hand-built windows; the official SQuAD v1.1 EM/F1. Every argument that changes
an output is exercised: AdamW's eps and betas at sizes where they matter, every no-decay name form,
dropout on (a fixed ``KeyedRandom``), non-default term_scales, repeated words in F1. A backward test
judges the backward against its own forward when that forward is wrong (``Check.derivative``)."""
from __future__ import annotations

import numpy as np

from .harness import Check, at_scale, graded

TESTS: dict = {}
test = graded(TESTS)

OPTIM = "minispanbert.optim:"
QA = "minispanbert.finetune.qa_head:"
SQUAD = "minispanbert.finetune.squad:"

ADAMW_HINT = ("w <- w (1 - lr wd) first (decoupled decay), then m = b1 m + (1 - b1) g, v = b2 v + (1 - b2) g^2, "
              "w <- w - lr m_hat / (sqrt(v_hat) + eps) with m_hat = m / (1 - b1^t), v_hat = v / (1 - b2^t).")


def _adamw_run(check, decay_mask, *, steps=3, grad_scale=1.0, **settings):
    from minispanbert.optim import adamw_init

    rng = np.random.default_rng(701)
    params = {"layer.dense.weight": rng.normal(size=(3, 4)), "layer.dense.bias": rng.normal(size=4)}
    state = adamw_init(params, xp=np)
    update = check.function(OPTIM + "adamw_update")
    history = []
    for step in range(steps):
        grads = {"layer.dense.weight": rng.normal(size=(3, 4)) * grad_scale,
                 "layer.dense.bias": np.zeros(4) if step else rng.normal(size=4)}
        update(params, grads, state, **{"lr": 0.1, "weight_decay": 0.1, **settings}, decay_mask=decay_mask, xp=np)
        history.append({name: value.copy() for name, value in params.items()})
    check.expect(state.t == steps, f"state.t is {state.t} after {steps} updates: count the steps in the state")
    return history


@test
def adamw_update(check: Check):
    for step, params in enumerate(_adamw_run(check, None), start=1):
        for name, value in params.items():
            check.close(f"{name} after step {step}", value, rtol=1e-9, hint=ADAMW_HINT)


@test
def adamw_eps_and_betas(check: Check):
    """eps 0.05 against gradients of size ~0.1 (sqrt(v_hat) ~ 0.1): where eps sits now changes the
    step by tens of percent; betas (0.8, 0.95) instead of the defaults."""
    for step, params in enumerate(_adamw_run(check, None, grad_scale=0.1, lr=0.05, eps=0.05, betas=(0.8, 0.95)), start=1):
        for name, value in params.items():
            check.close(f"{name} after step {step}", value, rtol=1e-9,
                        hint="use the betas and eps arguments; eps goes AFTER the bias correction, outside the "
                             "square root: m_hat / (sqrt(v_hat) + eps). " + ADAMW_HINT)


@test
def adamw_decay_mask(check: Check):
    history = _adamw_run(check, {"layer.dense.weight": True, "layer.dense.bias": False})
    bias_after_3 = history[2]["layer.dense.bias"]
    check.close("layer.dense.weight after step 3", history[2]["layer.dense.weight"], rtol=1e-9, hint=ADAMW_HINT)
    check.close("layer.dense.bias after step 3", bias_after_3, rtol=1e-9,
                hint="a parameter whose decay_mask entry is False gets no weight decay at all (biases and "
                     "LayerNorm parameters in BERT's recipe); only its Adam step moves it.")


@test
def no_decay_mask(check: Check):
    names = ["bert.embeddings.word_embeddings.weight", "bert.embeddings.LayerNorm.weight",
             "bert.embeddings.LayerNorm.bias", "bert.encoder.layer.0.attention.self.query.weight",
             "bert.encoder.layer.0.attention.self.query.bias", "bert.encoder.layer.0.output.LayerNorm.weight",
             "cls.predictions.bias", "cls.sbo.position_embeddings.weight", "qa_outputs.weight", "qa_outputs.bias",
             "cls.predictions.transform.LayerNorm.bias", "cls.sbo.mlp.1.LayerNorm.weight", "cls.sbo.bias",
             "lm_head.layer_norm.weight", "lm_head.layer_norm.bias", "lm_head.dense.weight",
             "albert.encoder.albert_layer_groups.0.albert_layers.0.full_layer_layer_norm.weight",
             "albert.encoder.albert_layer_groups.0.albert_layers.0.ffn.weight"]
    mask = check.function(OPTIM + "no_decay_mask")({name: np.zeros(1) for name in names})
    check.expect(isinstance(mask, dict) and set(mask) == set(names),
                 "no_decay_mask must return {name: bool} with exactly the parameters' names")
    check.equal("decay flags in name order", np.array([bool(mask[n]) for n in names]),
                hint="decay every weight matrix and embedding table; exempt names ending in .bias and every "
                     "LayerNorm weight and bias, whatever the spelling: BERT's LayerNorm, RoBERTa's lm_head.layer_norm, "
                     "ALBERT's full_layer_layer_norm.")


@test
def linear_warmup_decay(check: Check):
    schedule = check.function(OPTIM + "linear_warmup_decay")
    steps = [0, 1, 5, 9, 10, 11, 50, 99, 100, 150]
    rates = [schedule(s, peak_lr=1e-3, warmup_steps=10, total_steps=100) for s in steps]
    check.close("lr at steps 0, 1, 5, 9, 10, 11, 50, 99, 100, 150 (warmup 10, total 100)", np.array(rates, float),
                rtol=1e-12, hint="peak * step / warmup while step < warmup, then peak * max(0, (total - step) / "
                                 "(total - warmup)): 0 at step 0, peak at the end of the warm-up, 0 at total and after.")
    no_warmup = [schedule(s, peak_lr=1e-3, warmup_steps=0, total_steps=10) for s in (0, 5, 10)]
    check.close("lr at steps 0, 5, 10 without warm-up", np.array(no_warmup, float), rtol=1e-12,
                hint="with warmup_steps = 0 the schedule starts at the peak (no division by zero).")


def _clip_grads():
    rng = np.random.default_rng(702)
    return {"a": rng.normal(size=3) * 4.0, "b": rng.normal(size=(2, 2)) * 0.5}


# The task allows any scale that brings the global norm to max_norm: max_norm / (norm + 1e-6) as torch,
# or max_norm / norm exactly. The two differ by 1e-6 / norm relative (7e-8 in rel_error here: the norm is 7.3), so the
# clipped gradients are compared at 1e-6, about 15 times what that choice (and float rounding, ~1e-16)
# can move them; a wrong clip (per tensor, after the update, by the norm after clipping) is off by 1e-2 or more.
CLIP_RTOL = 1e-6
CLIP_HINT = ("one norm over ALL gradients together, sqrt(sum of every squared entry); if it exceeds max_norm, "
             "multiply every gradient by the same max_norm / (norm + 1e-6). Clipping each tensor on its own "
             "changes the direction of the update.")


@test
def clip_grad_norm(check: Check):
    grads = _clip_grads()
    norm = check.function(OPTIM + "clip_grad_norm")(grads, 1.0, xp=np)
    check.close("returned norm (before clipping)", np.asarray(norm, float), rtol=1e-10, hint=CLIP_HINT)
    for name, value in grads.items():
        check.close(f"clipped gradient {name!r}", value, rtol=CLIP_RTOL, hint=CLIP_HINT)


@test
def clip_grad_norm_small(check: Check):
    """Hidden: gradients already below max_norm are left exactly as they were."""
    grads = _clip_grads()
    before = {name: value.copy() for name, value in grads.items()}
    check.function(OPTIM + "clip_grad_norm")(grads, 100.0, xp=np)
    check.expect(all(np.array_equal(grads[n], before[n]) for n in grads),
                 "gradients whose global norm is below max_norm must not change.")


# At scale (harness.at_scale): the QA head on 24 x 128 positions of 128 features, the QA model with 128 hidden
# units (~2e5 parameters). Their centred differences take (measured, one core, float64) ~200 s and ~250 s, 10
# times the 20 s a test may run; the analytic float32 backward takes a few milliseconds.
AT_SCALE = {"hidden_size": 128, "num_attention_heads": 4, "intermediate_size": 512}
# Gradients zero in exact arithmetic, float32 noise at scale: the key bias (softmax ignores q.bk), the head's bias
# and the last LayerNorm's beta (each adds one constant to every start or end logit, which the softmax ignores).
ZERO_GRADIENTS = ("attention.self.key.bias", "qa_outputs.bias", "layer.0.output.LayerNorm.bias")


def _qa_setup(dtype="float64", **sizes):
    from minispanbert.config import ModelConfig
    from minispanbert.finetune.qa_head import init_qa_params

    sizes = {"hidden_size": 8, "num_attention_heads": 2, "intermediate_size": 16, **sizes}
    config = ModelConfig(vocab_size=20, num_hidden_layers=1, max_position_embeddings=16, **sizes,
                         hidden_dropout_prob=0.2, attention_probs_dropout_prob=0.2)  # used only by the tests that train
    params = init_qa_params(config, seed=703, xp=np, dtype=dtype)
    rng = np.random.default_rng(703)
    params = {name: value + rng.normal(size=value.shape).astype(dtype) * 0.2 for name, value in params.items()}
    arrays = {"input_ids": rng.integers(5, 20, size=(3, 7)), "token_type_ids": np.zeros((3, 7), np.int64),
              "attention_mask": np.ones((3, 7), np.int64),
              "start_positions": np.array([2, 0, 9]), "end_positions": np.array([4, 0, 5])}  # 9 >= T: ignored
    return config, params, arrays


@test
def qa_head_forward(check: Check):
    rng = np.random.default_rng(704)
    h, params = rng.normal(size=(2, 5, 8)), {"qa_outputs.weight": rng.normal(size=(2, 8)), "qa_outputs.bias": rng.normal(size=2)}
    result = check.function(QA + "qa_head_forward")(params, h, xp=np)
    check.expect(isinstance(result, tuple) and len(result) == 3, "qa_head_forward must return (start_logits, end_logits, cache)")
    hint = "[s | e] = h W^T + b with W (2, H): column 0 is the start logit, column 1 the end logit, each (B, T)."
    check.close("start_logits", result[0], hint=hint)
    check.close("end_logits", result[1], hint=hint)


@test
def qa_head_backward(check: Check):
    rng = np.random.default_rng(705)
    h, params = rng.normal(size=(2, 5, 8)), {"qa_outputs.weight": rng.normal(size=(2, 8)), "qa_outputs.bias": rng.normal(size=2)}
    forward = check.function(QA + "qa_head_forward")
    start, end, cache = forward(params, h, xp=np)
    ok = check.agrees("start and end logits (forward)", np.stack([start, end], axis=-1))
    dstart, dend = rng.normal(size=(2, 5)), rng.normal(size=(2, 5))
    result = check.function(QA + "qa_head_backward")(dstart, dend, cache, xp=np)
    check.expect(isinstance(result, tuple) and len(result) == 2, "qa_head_backward must return (dh, grads)")
    dh, grads = result
    hint = "stack dstart and dend into (B, T, 2) and go back through the linear map."
    both = lambda: np.stack(forward(params, h, xp=np)[:2], axis=-1)  # noqa: E731
    dboth = np.stack([dstart, dend], axis=-1)
    check.derivative("dh", dh, both, h, dboth, forward_agrees=ok, hint=hint)
    for name in params:
        check.expect(name in grads, f"grads has no entry {name!r}")
        check.derivative(name, grads[name], both, params[name], dboth, forward_agrees=ok, hint=hint)
    h, dstart, dend, weight, bias = (value.astype(np.float32) for value in (
        rng.normal(size=(24, 128, 128)), rng.normal(size=(24, 128)), rng.normal(size=(24, 128)),
        rng.normal(size=(2, 128)), rng.normal(size=2)))
    start, end, cache = forward({"qa_outputs.weight": weight, "qa_outputs.bias": bias}, h, xp=np)
    result = check.function(QA + "qa_head_backward")(dstart, dend, cache, xp=np)
    check.expect(isinstance(result, tuple) and len(result) == 2, "qa_head_backward must return (dh, grads)")
    dh, grads = result
    at_scale(check, "start and end logits", np.stack([start, end], axis=-1),
             {"dh": dh, **{name: grads.get(name) for name in ("qa_outputs.weight", "qa_outputs.bias")}})


QA_LOSS_HINT = ("L = (CE(start_logits, start_positions) + CE(end_logits, end_positions)) / 2, each CE a mean "
                "over its counted windows; a position >= T is ignored (position_labels).")


@test
def qa_loss(check: Check):
    config, params, arrays = _qa_setup()
    out, _ = check.function(QA + "qa_forward")(params, arrays, config, xp=np)
    for what in ("loss", "start_loss", "end_loss"):
        check.close(what, getattr(out, what), rtol=1e-9, hint=QA_LOSS_HINT)
    check.close("start_logits", out.start_logits, rtol=1e-9, hint=QA_LOSS_HINT)
    trained, _ = check.function(QA + "qa_forward")(params, arrays, config, xp=np, train=True, rng=_dropout_rng())
    check.close("loss with dropout (train=True, a fixed KeyedRandom)", trained.loss, rtol=1e-9,
                hint="pass train and rng on to encoder_forward: the encoder draws its dropout masks from rng.")


def _dropout_rng():
    from minispanbert.keyed_random import dropout_random

    return dropout_random(13, 0, xp=np)


@test
def qa_gradients(check: Check):
    config, params, arrays = _qa_setup()
    _qa_gradients(check, train=False, term_scales=None,
                  hint="each CE's upstream gradient is 0.5 (the mean of the two), then the head, then encoder_backward.")


@test
def qa_gradients_scaled(check: Check):
    """term_scales {start: 0.4, end: 1.6} and dropout on: the gradient of (0.4 CE_start + 1.6 CE_end) / 2
    through the forward's own dropout masks."""
    _qa_gradients(check, train=True, term_scales={"start": 0.4, "end": 1.6},
                  hint="the start term's upstream gradient is 0.5 * term_scales['start'], the end term's "
                       "0.5 * term_scales['end']; the dropout masks are the forward's, kept in its cache.")


def _qa_gradients(check, *, train, term_scales, hint):
    """qa_backward against the reference, or (when the forward's loss is off) against the centred
    differences of the submission's own scaled loss."""
    config, params, arrays = _qa_setup()
    forward = check.function(QA + "qa_forward")
    scales = {"start": 1.0, "end": 1.0, **(term_scales or {})}

    def scaled_loss():
        out = forward(params, arrays, config, xp=np, train=train, rng=_dropout_rng() if train else None)[0]
        return (scales["start"] * out.start_loss + scales["end"] * out.end_loss) / 2
    out, cache = forward(params, arrays, config, xp=np, train=train, rng=_dropout_rng() if train else None)
    ok = check.agrees("loss (forward)", out.loss, rtol=1e-9)
    backward = check.function(QA + "qa_backward")
    grads = backward(cache, xp=np, term_scales=term_scales) if term_scales else backward(cache, xp=np)
    for name in sorted(params):
        check.expect(name in grads, f"grads has no entry {name!r}: return the gradient of every parameter")
        check.close_if(ok, name, grads[name], rtol=1e-6, hint=hint)
    for name in ("qa_outputs.weight", "bert.embeddings.word_embeddings.weight"):
        check.derivative(name, grads[name], scaled_loss, params[name], forward_agrees=ok, rtol=1e-6, hint=hint)
    config, params, arrays = _qa_setup("float32", **AT_SCALE)
    out, cache = forward(params, arrays, config, xp=np, train=train, rng=_dropout_rng() if train else None)
    grads = backward(cache, xp=np, term_scales=term_scales) if term_scales else backward(cache, xp=np)
    check.expect(isinstance(grads, dict), "qa_backward must return {parameter name: gradient}")
    at_scale(check, "loss", out.loss,
             {name: grads.get(name) for name in sorted(params) if not name.endswith(ZERO_GRADIENTS)})


def _decode_setup(seed):
    from minispanbert.finetune.squad import QAFeature, SquadExample

    context = "The Eiffel Tower was finished in 1889 in Paris by Gustave Eiffel"
    words, offsets, pos = context.split(" "), [], 0
    for word in words:
        start = context.index(word, pos)
        offsets.append((start, start + len(word)))
        pos = start + len(word)
    offsets = np.array(offsets, dtype=np.int32)
    examples = [SquadExample("q0", "t", "When was it finished?", context, (("1889", 33),)),
                SquadExample("q1", "t", "Who built it?", context, (("Gustave Eiffel", 50),))]
    T, P = 14, 7  # two overlapping windows of 7 passage tokens; words 0-5 have maximal context in
    features = []  # window 0, words 6-11 in window 1; passage token j sits at sequence position 3 + j
    for example_index in range(2):
        for window, doc_start in enumerate((0, 5)):
            length = min(P, len(words) - doc_start)
            owned = np.arange(doc_start, doc_start + length)
            is_max = owned <= 5 if window == 0 else owned >= 6
            features.append(QAFeature(example_index, window, doc_start, np.zeros(T, np.int32), np.zeros(T, np.int32),
                                      np.ones(T, np.int32), 3, offsets[doc_start:doc_start + length], is_max, None, None))
    rng = np.random.default_rng(seed)
    return examples, features, rng.normal(size=(4, T)), rng.normal(size=(4, T))


DECODE_HINT = ("per window: candidate starts are passage tokens with maximal context, ends any passage token, "
               "end >= start, end - start + 1 <= max_answer_len, score = start logit + end logit; the best span "
               "over all windows of an example wins; its text is context[offset_start(start):offset_end(end)].")


@test
def decode_predictions(check: Check):
    examples, features, start_logits, end_logits = _decode_setup(706)
    start_logits[1, 3 + 1] += 6.0  # q0, window 1: passage token 1 of that window = word 6 "1889"
    end_logits[1, 3 + 1] += 6.0
    start_logits[3, 3 + 5] += 5.0  # q1, window 1: words 10..11 "Gustave Eiffel"
    end_logits[3, 3 + 6] += 5.0
    decode = check.function(SQUAD + "decode_predictions")
    predictions = decode(examples, features, start_logits, end_logits, n_best=20, max_answer_len=30)
    check.expect(isinstance(predictions, dict) and set(predictions) == {"q0", "q1"},
                 "decode_predictions must return {question id: answer text} for every example")
    check.equal("answers of q0, q1", np.array([predictions["q0"], predictions["q1"]]), hint=DECODE_HINT)
    short = decode(examples, features, start_logits, end_logits, n_best=20, max_answer_len=1)
    check.equal("answers with max_answer_len=1", np.array([short["q0"], short["q1"]]), hint=DECODE_HINT)


@test
def decode_constraints(check: Check):
    """Hidden: the best-scoring pair is forbidden (end before start, or a start without maximal
    context), so the decoder must pick the best allowed one."""
    examples, features, start_logits, end_logits = _decode_setup(707)
    start_logits[0, 3 + 6] += 40.0  # a start at word 6: window 0 lacks max context there (window 1 has it)
    end_logits[0, 3 + 6] += 10.0
    end_logits[0, 3 + 2] += 20.0  # an end before most starts
    end_logits[2, 3 + 0] += 20.0  # q1: an end before every start
    predictions = check.function(SQUAD + "decode_predictions")(examples, features, start_logits, end_logits)
    check.equal("answers of q0, q1", np.array([predictions["q0"], predictions["q1"]]), hint=DECODE_HINT)


PAIRS = [("The Chrysler Building!", "Chrysler building"), ("in 1889", "1889"), ("a cat", "the cat sat"),
         ("Paris, France", "France"), ("Gustave Eiffel's", "gustave eiffels"), ("the", "a"),
         ("New York City", "York"), ("to be or not", "not to be"), ("abc", "cab"), ("1,000 feet", "1000 ft")]


@test
def normalize_answer(check: Check):
    normalize = check.function(SQUAD + "normalize_answer")
    texts = [t for pair in PAIRS for t in pair] + ["  An   apple\tpie ", "the-end", "Theatre"]
    check.equal("normalised texts", np.array([normalize(t) for t in texts]),
                hint="lower-case, drop punctuation, drop the words a/an/the, collapse whitespace (in that order).")


@test
def exact_match_score(check: Check):
    em = check.function(SQUAD + "exact_match_score")
    check.equal("EM of the pairs", np.array([bool(em(p, g)) for p, g in PAIRS]),
                hint="equal after normalize_answer on both sides.")


@test
def f1_score(check: Check):
    f1 = check.function(SQUAD + "f1_score")
    hint = ("F1 over the bags of normalised WORDS (split on whitespace), shared words counted with "
            "multiplicity (Counter intersection); 0 when nothing is shared.")
    check.close("F1 of the pairs", np.array([f1(p, g) for p, g in PAIRS], float), rtol=1e-12, hint=hint)
    repeated = [("cat and cat", "cat cat sat"), ("go go go team", "go team go"), ("New York, New York", "new york")]
    check.close("F1 with repeated words", np.array([f1(p, g) for p, g in repeated], float), rtol=1e-12,
                hint="a word shared twice counts twice (min of its counts on the two sides), not once as a set "
                     "intersection would. " + hint)


@test
def f1_edge_cases(check: Check):
    """Hidden: empty answers and repeated words."""
    f1 = check.function(SQUAD + "f1_score")
    cases = [("", "Paris"), ("the", "Paris"), ("Paris Paris Paris", "Paris"), ("Paris", "Paris Paris")]
    check.close("F1 of the edge cases", np.array([f1(p, g) for p, g in cases], float), rtol=1e-12,
                hint="a side that normalises to nothing scores 0; repeated words count as often as both sides have them.")
