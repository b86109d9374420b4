"""The pretraining loop (minispanbert/train.py) against expectations computed independently of it.

test_train.py compares the loop with itself (resume == straight run, --log-every 1 == 3); wiring
bugs that are consistent with themselves pass there. Here, on one short run of the ``tiny`` preset
with dropout on:

* the learning rate logged in metrics.jsonl, and the one handed to the optimizer, equal the
  schedule written out by hand (warmup then linear decay, 0-based update index) at every step;
* the span masks of step s are exactly those drawn from the stream (seed, step) -- train.py's
  ``np.random.default_rng([seed, step, 1])`` -- and the dropout masks exactly the Philox draws
  keyed by (seed, step, 3) that minispanbert/keyed_random.py documents; and they differ from step to step;
* ``evaluate`` pools the held-out loss and accuracy over batches weighted by each batch's target
  count (a hand-computed weighted mean, and a single forward pass on the batches concatenated).

Only the stable surfaces are touched: metrics.jsonl records, the functions make_batch (of the
spanbert objective), train_step and evaluate, and the encoder's dropout call (recorded, not replaced).
"""
import json
from types import SimpleNamespace

import numpy as np
import pytest

from minispanbert import train as loop
from minispanbert.engine import trainer as train
from minispanbert.engine.check_gradients import CHECK_CONFIG, hand_batch, scaled_model_params
from minispanbert.engine.trainer import RunConfig
from minispanbert.family import spanbert as spanbert_objective
from minispanbert.model import encoder as encoder_module
from minispanbert.model.spanbert_loss import SpanBertForPretraining

WORDS = ("the cat sat on a mat while dogs barked loudly at passing cars and people walked home "
         "slowly through heavy rain under grey skies near old stone bridges").split()
STEPS, WARMUP, PEAK_LR, SEED, DROPOUT = 7, 3, 2e-3, 5, 0.1


def hand_schedule(update: int) -> float:
    """The learning rate of the ``update``-th optimizer step (1-based, as metrics.jsonl counts):
    its 0-based index s = update - 1 climbs linearly from 0 (s = 0) to the peak (s = warmup), then
    decays linearly to 0 at s = total."""
    s = update - 1
    if s < WARMUP:
        return PEAK_LR * s / WARMUP
    return PEAK_LR * (STEPS - s) / (STEPS - WARMUP)


@pytest.fixture(scope="module")
def recorded_run(tmp_path_factory):
    """One 7-step run of the tiny preset (dropout 0.1), recording the batches, the lr given to the
    optimizer and the embedding-dropout masks, and, for each step, the batch re-drawn from the
    (seed, step) stream."""
    tmp = tmp_path_factory.mktemp("loop")
    rng = np.random.default_rng(0)
    docs = ["\n".join(" ".join(rng.choice(WORDS, size=rng.integers(5, 20))) + " ." for _ in range(5))
            for _ in range(30)]
    corpus = tmp / "corpus.txt"
    corpus.write_text("\n\n".join(docs) + "\n", encoding="utf-8")
    cfg = RunConfig(data=str(corpus), out=str(tmp / "run"), steps=STEPS, warmup=WARMUP, lr=PEAK_LR, seed=SEED,
                      dropout=DROPOUT, batch_size=4, seq_len=32, eval_every=STEPS, save_every=STEPS, eval_batches=2,
                      threads=1)  # one forward per step (a batch split over threads: test_thread_parallel.py)
    record = SimpleNamespace(batches=[], expected_batches=[], lrs=[], dropout_masks=[])
    real_make_batch, real_step = spanbert_objective.make_batch, loop.train_step
    real_dropout = encoder_module.dropout_forward

    def make_batch(examples, rng, **kwargs):
        batch = real_make_batch(examples, rng, **kwargs)
        if list(rng.bit_generator.seed_seq.entropy) == [SEED, 0, 2]:  # the held-out batches' fixed masks
            return batch
        step = len(record.batches)
        record.batches.append(batch)
        record.expected_batches.append(real_make_batch(examples, np.random.default_rng([SEED, step, 1]), **kwargs))
        return batch

    def train_step(*args, lr, **kwargs):
        record.lrs.append(lr)
        return real_step(*args, lr=lr, **kwargs)

    def dropout_forward(x, p, rng, *, xp, train):
        out, cache = real_dropout(x, p, rng, xp=xp, train=train)
        if train:
            record.dropout_masks.append(np.asarray(cache) != 0)  # the first dropout of a forward: embeddings
        return out, cache

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(spanbert_objective, "make_batch", make_batch)
        mp.setattr(loop, "train_step", train_step)
        mp.setattr(encoder_module, "dropout_forward", dropout_forward)
        train.run(cfg, log=lambda _msg: None)
    record.metrics = [json.loads(line) for line in (tmp / "run" / "metrics.jsonl").read_text().splitlines()]
    return record


def test_logged_and_applied_learning_rate_equal_the_schedule_at_every_step(recorded_run):
    train_records = [r for r in recorded_run.metrics if r["split"] == "train"]
    assert [r["step"] for r in train_records] == list(range(1, STEPS + 1))
    expected = [hand_schedule(k) for k in range(1, STEPS + 1)]
    assert expected[0] == 0.0 and max(expected) == PEAK_LR  # the case covers warmup, peak and decay
    assert [r["lr"] for r in train_records] == pytest.approx(expected, rel=1e-12, abs=1e-15)
    assert recorded_run.lrs == pytest.approx(expected, rel=1e-12, abs=1e-15)


def test_span_masks_are_those_of_the_seed_step_stream_and_change_every_step(recorded_run):
    batches, expected = recorded_run.batches, recorded_run.expected_batches
    assert len(batches) == STEPS
    for step, (got, want) in enumerate(zip(batches, expected)):
        for field, value in vars(want).items():
            np.testing.assert_array_equal(getattr(got, field), value, err_msg=f"step {step}: {field}")
    # (a necessary condition only: the blocks differ between steps too; the equality above is the test)
    patterns = [tuple(np.flatnonzero(b.mlm_labels.reshape(-1) != -100)) for b in batches]
    assert len(set(patterns)) == STEPS, "two steps drew the same span masks"


def test_dropout_masks_are_those_of_the_seed_step_stream_and_change_every_step(recorded_run):
    masks = recorded_run.dropout_masks
    assert len(masks) == STEPS  # one training forward per step; evaluation runs without dropout
    for step, mask in enumerate(masks):
        # the documented scheme, written out here: a Philox key from SeedSequence((seed, step, 3)), the
        # step's first draw (counter word 1 = 0), rows from counter 0 (whole blocks: T*H is a multiple of 8)
        key = np.random.SeedSequence([SEED, step, 3]).generate_state(2, np.uint64)
        philox = np.random.Generator(np.random.Philox(key=key, counter=[0, 0, 0, 0]))
        expected = philox.random(mask.size, dtype=np.float32).reshape(mask.shape) >= DROPOUT
        np.testing.assert_array_equal(mask, expected, err_msg=f"dropout mask of step {step}")
        assert 0.8 < mask.mean() < 0.97
    for step in range(1, STEPS):
        assert (masks[step] != masks[step - 1]).mean() > 0.05, f"steps {step - 1} and {step} share a dropout mask"


class FixedOutputModel:
    """Stands in for the model in evaluate(): returns prescribed per-batch means and counts."""

    def __init__(self, outputs):
        self.outputs = iter(outputs)

    def forward(self, batch, train=False):
        assert train is False
        return next(self.outputs), None


def test_evaluate_weights_each_batch_by_its_target_count():
    outputs = [SimpleNamespace(mlm_loss=2.0, mlm_correct=1, mlm_count=1, sbo_loss=1.0, sbo_correct=2, sbo_count=4),
               SimpleNamespace(mlm_loss=6.0, mlm_correct=0, mlm_count=3, sbo_loss=3.5, sbo_correct=1, sbo_count=1)]
    result = loop.evaluate(FixedOutputModel(outputs), [object(), object()])
    # by hand: MLM (2*1 + 6*3) / 4 = 5 (not (2 + 6) / 2 = 4), accuracy 1/4; SBO (1*4 + 3.5*1) / 5 = 1.5, 3/5
    assert result["mlm_loss"] == pytest.approx(5.0, rel=1e-15)
    assert result["mlm_acc"] == pytest.approx(0.25, rel=1e-15)
    assert result["sbo_loss"] == pytest.approx(1.5, rel=1e-15)
    assert result["sbo_acc"] == pytest.approx(0.6, rel=1e-15)
    assert (result["mlm_targets"], result["sbo_targets"]) == (4, 5)


def _concatenate(first, second):
    """One batch holding the rows of both (SBO rows of the second shifted by the first's B)."""
    rows = first.input_ids.shape[0]
    fields = {name: np.concatenate([getattr(first, name), getattr(second, name)])
              for name in ("input_ids", "attention_mask", "token_type_ids", "mlm_labels", "sbo_left", "sbo_right",
                           "sbo_rel_pos", "sbo_target")}
    fields["sbo_batch"] = np.concatenate([first.sbo_batch, second.sbo_batch + rows])
    return SimpleNamespace(**fields)


def test_evaluate_equals_one_forward_over_all_held_out_targets():
    """Two real batches with 4 and 1 MLM targets (3 and 1 SBO targets): evaluate() must give what a
    single forward pass computes over the five targets at once (its mean is over all of them)."""
    model = SpanBertForPretraining(CHECK_CONFIG, scaled_model_params(3), xp=np)
    big = hand_batch()
    small = hand_batch()
    small.mlm_labels = np.full_like(small.mlm_labels, -100)
    small.mlm_labels[1, 2] = 5
    small.sbo_batch, small.sbo_left, small.sbo_right = np.array([1]), np.array([1]), np.array([3])
    small.sbo_rel_pos, small.sbo_target = np.array([0]), np.array([5])
    result = loop.evaluate(model, [big, small])
    pooled, _ = model.forward(_concatenate(big, small))
    assert (result["mlm_targets"], result["sbo_targets"]) == (5, 4)
    assert result["mlm_loss"] == pytest.approx(float(pooled.mlm_loss), rel=1e-12)
    assert result["sbo_loss"] == pytest.approx(float(pooled.sbo_loss), rel=1e-12)
    assert result["mlm_acc"] == pytest.approx(float(pooled.mlm_correct) / 5, rel=1e-12)


def test_the_plain_loop_and_the_command_train_the_same_model(tmp_path, monkeypatch, capsys):
    """minispanbert.train.run (the loop alone, textbook AdamW, one thread) and python -m
    minispanbert.train --threads 1 (the same loop with the command's hooks and its in-place AdamW)
    on the same documents, tokenizer and seed, dropout on, float64: the same final weights to
    float rounding (the two AdamW implementations order their operations differently)."""
    from minispanbert import config as config_module
    from minispanbert.data import read_corpus, save_tokenizer, train_tokenizer
    from minispanbert.engine.runs.checkpoint import load_checkpoint
    from minispanbert.train import TrainConfig, run

    from micro_runs import micro_config, write_corpus

    monkeypatch.setitem(config_module.PRESETS, "micro", micro_config())
    corpus = write_corpus(tmp_path / "corpus.txt")
    documents = read_corpus(corpus)
    tokenizer = train_tokenizer((line for doc in documents for line in doc), 200)
    save_tokenizer(tokenizer, tmp_path / "tokenizer.json")
    settings = dict(preset="micro", steps=6, batch_size=2, seq_len=16, dtype="float64", eval_every=3, eval_batches=1,
                    print_every=3, seed=4)
    model = run(TrainConfig(**settings), documents, tokenizer=tokenizer)
    printed = capsys.readouterr().out
    assert "step 6/6: loss" in printed and "= MLM" in printed and "+ SBO" in printed
    train.run(RunConfig(**settings, data=str(corpus), out=str(tmp_path / "run"), save_every=6, threads=1,
                        tokenizer=str(tmp_path / "tokenizer.json")), log=lambda _m: None)
    saved = load_checkpoint(tmp_path / "run", xp=np).params
    assert saved.keys() == model.params.keys()
    for name, value in model.params.items():
        np.testing.assert_allclose(saved[name], value, rtol=1e-9, atol=1e-12, err_msg=name)
