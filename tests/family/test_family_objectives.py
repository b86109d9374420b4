"""BERT (MLM + NSP), RoBERTa (MLM) and ALBERT (MLM + SOP) as whole losses: float64 gradient checks
(dropout on with fixed masks, and off), the sentence head against its closed form, the losses and
every gradient against Hugging Face's BertForPreTraining / RobertaForMaskedLM / AlbertForPreTraining
to 1e-10 on padded batches, and checkpoints that open in those classes with only the tied aliases
missing."""
from types import SimpleNamespace

import numpy as np
import pytest

from minispanbert.config import ModelConfig, preset
from minispanbert.engine.check_gradients import (
    MODEL_TOLERANCE,
    check_family_loss,
    family_pair_batch,
)
from minispanbert.family.albert import AlbertForPretraining, albert_config
from minispanbert.family.bert import BertForPretraining
from minispanbert.family.roberta import RobertaForMaskedLM, roberta_config
from minispanbert.gradcheck import assert_errors_below, rel_error
from minispanbert.layers.cross_entropy import IGNORE_INDEX
from minispanbert.model.encoder import encoder_forward
from minispanbert.model.names import key_bias_names

SMALL = ModelConfig(vocab_size=40, hidden_size=16, num_hidden_layers=3, num_attention_heads=4,
                    intermediate_size=24, max_position_embeddings=14, hidden_dropout_prob=0.0,
                    attention_probs_dropout_prob=0.0)
MODELS = {
    "bert": (BertForPretraining, SMALL, "BertForPreTraining"),
    "roberta": (RobertaForMaskedLM, roberta_config(SMALL), "RobertaForMaskedLM"),
    "albert": (AlbertForPretraining, albert_config(SMALL, embedding_size=8).replace(
        num_hidden_groups=2, inner_group_num=2), "AlbertForPreTraining"),
}
ALIASES = {"bert": {"cls.predictions.decoder.weight", "cls.predictions.decoder.bias"},
           "roberta": {"lm_head.decoder.weight", "lm_head.decoder.bias"},
           "albert": {"predictions.decoder.weight", "predictions.decoder.bias"}}


@pytest.mark.parametrize("objective, dropout", [("bert", True), ("roberta", False), ("albert", True)])
def test_family_loss_gradients_float64(objective, dropout):
    assert_errors_below(check_family_loss(objective, dropout=dropout), MODEL_TOLERANCE, f"{objective} loss")


def nontrivial(model, seed):
    """Weights 6x larger and LayerNorm/bias values moved off (1, 0), so a swapped or missing term shows."""
    rng = np.random.default_rng(seed)
    for name, value in model.params.items():
        if value.ndim == 2:
            value *= 6
        else:
            value += 0.2 * rng.normal(size=value.shape)
    return model


@pytest.mark.parametrize("objective", ["bert", "albert"])
def test_sentence_head_equals_its_closed_form(objective):
    """NSP/SOP loss = -log softmax(W_c tanh(W_p h0 + b_p) + b_c)[label], written out by hand from
    the encoder's output; the pooled decision is the argmax of those two logits."""
    model_class, config, _ = MODELS[objective]
    model = nontrivial(model_class.initialise(config, seed=1, xp=np, dtype="float64"), 2)
    batch = family_pair_batch()
    out, _ = model.forward(batch)
    head = model_class.sentence
    h, _ = encoder_forward(model.params, batch.input_ids, batch.token_type_ids, batch.attention_mask, config, xp=np)
    p = np.tanh(h[:, 0] @ model.params[head.pooler + "weight"].T + model.params[head.pooler + "bias"])
    s = p @ model.params[head.classifier + "weight"].T + model.params[head.classifier + "bias"]
    log_softmax = s - np.log(np.exp(s).sum(axis=1, keepdims=True))
    expected = -log_softmax[np.arange(2), batch.sentence_labels].mean()
    assert abs(float(getattr(out, f"{head.term}_loss")) - expected) < 1e-12
    np.testing.assert_allclose(out.sentence_logits, s, rtol=1e-12)
    assert int(getattr(out, f"{head.term}_correct")) == int((s.argmax(axis=1) == batch.sentence_labels).sum())
    assert float(out.loss) == pytest.approx(float(out.mlm_loss) + expected, rel=1e-12)


@pytest.mark.parametrize("objective", list(MODELS))
def test_initial_losses_are_ln_v_and_ln_2(objective):
    model_class, config, _ = MODELS[objective]
    config = config.replace(vocab_size=500)
    model = model_class.initialise(config, seed=0, xp=np, dtype="float64")
    out, _ = model.forward(family_pair_batch(config.model_type))
    assert abs(float(out.mlm_loss) - np.log(500)) < 0.05
    if model_class.sentence is not None:
        assert abs(float(getattr(out, f"{model_class.sentence.term}_loss")) - np.log(2)) < 0.01


def parity_batch(config, rng):
    """Three rows of 12 (the maximum length: 12 = P - 2 for RoBERTa): one full, two padded; a pad
    id inside row 0 (attended), a repeated token, both segment ids, -100 off the targets."""
    B, T = 3, 12
    pad = 0 if config.pad_token_id is None else config.pad_token_id
    cls, sep = (0, 2) if config.model_type == "roberta" else (2, 3)
    ids = rng.integers(5, config.vocab_size, size=(B, T))
    ids[:, 0] = cls
    ids[0, 3] = ids[0, 4] = ids[1, 2]       # duplicate ids: their embedding rows accumulate
    ids[0, 7] = pad                         # the pad id inside a row
    mask = np.ones((B, T), dtype=np.int64)
    mask[1, 9:], mask[2, 6:] = 0, 0
    ids[mask == 0] = pad
    types = np.zeros((B, T), dtype=np.int64)
    for b, n in enumerate((12, 9, 6)):
        ids[b, n - 1] = sep
        if config.type_vocab_size > 1:
            types[b, n // 2:n] = 1
    labels = np.full((B, T), IGNORE_INDEX)
    for b, cols in enumerate(([1, 3, 4, 10], [2, 5], [1, 3])):
        labels[b, cols] = rng.integers(5, config.vocab_size, size=len(cols))
        ids[b, cols[0]] = 4
    return SimpleNamespace(input_ids=ids, attention_mask=mask, token_type_ids=types, mlm_labels=labels,
                           sentence_labels=np.array([0, 1, 1]))


@pytest.mark.parametrize("objective", list(MODELS))
def test_losses_and_every_gradient_equal_hugging_face_float64(objective):
    torch = pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from family_hf import hf_model, load_ours

    model_class, config, hf_class = MODELS[objective]
    ours = nontrivial(model_class.initialise(config, seed=3, xp=np, dtype="float64"), 4)
    hf = hf_model(config, hf_class)
    assert load_ours(hf, ours.params) == ALIASES[objective]
    assert {name for name, _ in hf.named_parameters()} == set(ours.params)
    batch = parity_batch(config, np.random.default_rng(7))
    out, cache = ours.forward(batch)
    grads = ours.backward(cache)

    t = {k: torch.from_numpy(getattr(batch, k)) for k in ("input_ids", "attention_mask", "token_type_ids")}
    t["labels"] = torch.from_numpy(batch.mlm_labels)
    if objective == "bert":
        t["next_sentence_label"] = torch.from_numpy(batch.sentence_labels)
    if objective == "albert":
        t["sentence_order_label"] = torch.from_numpy(batch.sentence_labels)
    result = hf(**t)
    result.loss.backward()
    assert rel_error(float(out.loss), result.loss.item()) < 1e-12
    logits = (result.logits if objective == "roberta" else result.prediction_logits).detach().numpy()
    targets = batch.mlm_labels != IGNORE_INDEX
    assert int(out.mlm_correct) == int((logits[targets].argmax(-1) == batch.mlm_labels[targets]).sum())
    if objective != "roberta":
        sentence = (result.seq_relationship_logits if objective == "bert" else result.sop_logits).detach().numpy()
        assert rel_error(out.sentence_logits, sentence) < 1e-12
    for name, p in hf.named_parameters():
        if name in key_bias_names(config):
            assert np.abs(grads[name]).max() < 1e-10 and float(p.grad.abs().max()) < 1e-10, name
        else:
            assert rel_error(grads[name], p.grad.numpy()) < 1e-10, name


@pytest.mark.parametrize("objective", list(MODELS))
def test_saved_checkpoints_open_in_the_hugging_face_class(objective, tmp_path):
    torch = pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from safetensors.numpy import load_file

    from minispanbert.engine.runs.checkpoint import load_checkpoint, save_checkpoint
    from minispanbert.optim import adamw_init

    from family_hf import hf_model

    model_class, config, hf_class = MODELS[objective]
    model = model_class.initialise(config, seed=0, xp=np, dtype="float32")
    folder = save_checkpoint(tmp_path, params=model.params, optimizer_state=adamw_init(model.params, xp=np), step=1,
                             config={"model": config.to_dict()})
    weights = [f for f in folder.iterdir() if f.suffix == ".safetensors" and "optim" not in f.name]
    tensors = {}
    for f in weights:
        tensors.update({k: v for k, v in load_file(str(f)).items() if k in model.params})
    assert set(tensors) == set(model.params)
    hf = hf_model(config, hf_class).float()
    result = hf.load_state_dict({k: torch.from_numpy(v) for k, v in tensors.items()}, strict=False)
    assert set(result.missing_keys) == ALIASES[objective] and not result.unexpected_keys
    assert load_checkpoint(folder, xp=np).params.keys() == model.params.keys()


@pytest.mark.parametrize("objective", ["roberta", "albert"])
def test_export_hf_folders_open_with_from_pretrained_and_give_our_outputs(objective, tmp_path):
    """python -m minispanbert.export_hf on a RoBERTa / ALBERT run: the folder opens in its class
    with from_pretrained and no missing or unexpected keys, and gives our logits."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from minispanbert.engine.runs.checkpoint import save_checkpoint
    from minispanbert.family.objectives import get_objective
    from minispanbert.interop.export_hf import main as export_main
    from minispanbert.optim import adamw_init

    model_class, config, hf_class = MODELS[objective]
    model = nontrivial(model_class.initialise(config, seed=0, xp=np, dtype="float64"), 1)
    # a tokenizer of the family's kind (tests/interop/test_export_tokenizers.py checks what the folder makes of it)
    tok = get_objective(objective).train_tokenizer(["the cat sat on the mat"] * 3, 300)
    save_checkpoint(tmp_path / "run", params=model.params, optimizer_state=adamw_init(model.params, xp=np), step=1,
                    config={"model": config.to_dict()}, files={"tokenizer.json": tok.to_str()})
    assert export_main(["--checkpoint", str(tmp_path / "run"), "--out", str(tmp_path / "hf"),
                        "--dtype", "float64"]) == hf_class
    hf, info = getattr(transformers, hf_class).from_pretrained(str(tmp_path / "hf"), output_loading_info=True,
                                                               attn_implementation="eager")
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    hf = hf.double().eval()
    batch = parity_batch(config, np.random.default_rng(7))
    out, _ = model.forward(batch)
    inputs = {k: torch.from_numpy(getattr(batch, k)) for k in ("input_ids", "attention_mask", "token_type_ids")}
    inputs["labels"] = torch.from_numpy(batch.mlm_labels)
    if objective == "albert":
        inputs["sentence_order_label"] = torch.from_numpy(batch.sentence_labels)
    with torch.no_grad():
        result = hf(**inputs)
    assert rel_error(float(out.loss), result.loss.item()) < 1e-10


def test_albert_s_activation_is_gelu_new():
    """Hugging Face's AlbertConfig defaults hidden_act to "gelu_new" (the released configs too): the
    tanh approximation, ALBERT's TF gelu. A preset turned into ALBERT keeps it."""
    config = albert_config(ModelConfig())
    assert config.hidden_act == "gelu_new" and config.model_type == "albert"



def test_roberta_s_settings_are_those_of_the_released_roberta_base():
    """The base preset turned into RoBERTa carries the values of the released roberta-base
    config.json (FacebookAI/roberta-base): 514 positions (512 + the pad offset of 2, since position
    ids start at pad_token_id + 1 = 2), layer_norm_eps 1e-05, one token type, <pad> = 1."""
    config = roberta_config(preset("base"))
    assert (config.max_position_embeddings, config.layer_norm_eps, config.type_vocab_size, config.pad_token_id) == (
        514, 1e-05, 1, 1)
    assert config.model_type == "roberta" and config.hidden_size == 768

def _dropout_calls(monkeypatch, run):
    """The dropout probabilities used during ``run()`` (train mode), recorded at every call site."""
    import minispanbert.family.bert as bert_module
    import minispanbert.layers.attention as attention_module
    import minispanbert.layers.residual as residual_module
    import minispanbert.model.encoder as encoder_module

    calls = []
    for module in (attention_module, residual_module, encoder_module, bert_module):
        real = module.dropout_forward

        def recording(x, p, rng, *, xp, train, _real=real, _site=module.__name__.rsplit(".", 1)[1]):
            calls.append((_site, p))
            return _real(x, p, rng, xp=xp, train=train)

        monkeypatch.setattr(module, "dropout_forward", recording)
    run()
    return calls


def test_albert_has_no_dropout_on_the_ffn_output_and_dropout_before_sop(monkeypatch):
    """Hugging Face's AlbertLayer adds ffn_output to the attention output with no dropout (only the
    attention probabilities, the attention output and the embeddings are dropped), and AlbertSOPHead
    drops the pooled vector (classifier_dropout_prob) before its classifier. With L = 2 layer
    applications: 1 embedding + 2 x (probabilities, attention output) + 1 SOP = 6 dropouts at p > 0,
    the FFN outputs' at p = 0."""
    config = albert_config(ModelConfig(vocab_size=40, hidden_size=8, num_hidden_layers=2, num_attention_heads=2,
                                       intermediate_size=16, max_position_embeddings=16,
                                       hidden_dropout_prob=0.2, attention_probs_dropout_prob=0.1))
    model = AlbertForPretraining.initialise(config, seed=0, xp=np, dtype="float64")
    batch = family_pair_batch("albert")
    calls = _dropout_calls(monkeypatch, lambda: model.forward(batch, train=True, rng=np.random.default_rng(0)))
    dropped = [(site, p) for site, p in calls if p > 0]
    assert sorted(dropped) == sorted([("encoder", 0.2), ("bert", 0.2)] + [("attention", 0.1), ("residual", 0.2)] * 2)
    assert [p for site, p in calls if site == "residual"] == [0.2, 0.0, 0.2, 0.0]  # attention output, then FFN output
