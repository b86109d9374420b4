"""Hugging Face conventions a user relies on (issue #25, item 5), each against ``transformers`` itself
where it is installed: token_type_ids may be left out (zeros); a one-label sequence classifier is a
regressor (mean squared error), never a silent zero loss."""
import numpy as np
import pytest

from minispanbert.finetune.sequence_classification import init_sequence_classification_params
from minispanbert.finetune.sequence_classification import sequence_classification_forward as classify
from minispanbert.interop.heads import bert_outputs
from minispanbert.interop.huggingface import load_pretrained, save_pretrained

H, V, L, P, F = 8, 40, 2, 24, 16


def _hf_config(transformers, **extra):
    return transformers.BertConfig(vocab_size=V, hidden_size=H, num_hidden_layers=L, num_attention_heads=2,
                                   intermediate_size=F, max_position_embeddings=P, attn_implementation="eager",
                                   **extra)


def _inputs(rng, B=3, T=9):
    ids = rng.integers(1, V, (B, T))
    mask = np.ones_like(ids)
    mask[-1, T - 3:] = 0
    return ids, mask


def _saved_hf_model(tmp_path, transformers, torch, architecture="BertForSequenceClassification", **config):
    """A random ``architecture`` from transformers, saved as a folder: (the float64 torch model, the folder)."""
    torch.manual_seed(0)
    hf_model = getattr(transformers, architecture)(_hf_config(transformers, **config)).eval()
    hf_model.save_pretrained(tmp_path, safe_serialization=True)
    return hf_model.double(), tmp_path


def test_token_type_ids_left_out_mean_zeros_as_in_transformers(tmp_path):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    hf_model, folder = _saved_hf_model(tmp_path, transformers, torch, num_labels=3, type_vocab_size=2)
    with torch.no_grad():  # transformers keeps the type-1 row random, so segment 0 is what it must pick
        hf_model.bert.embeddings.token_type_embeddings.weight[1] += 1.0
    hf_model.save_pretrained(folder, safe_serialization=True)
    ids, mask = _inputs(np.random.default_rng(1))
    with torch.no_grad():
        reference = hf_model(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask))
    model = load_pretrained(folder, dtype="float64")
    ours = bert_outputs(model, ids, None, mask, xp=np)
    np.testing.assert_allclose(ours["logits"], reference.logits.numpy(), rtol=1e-10, atol=1e-12)
    segment_one = bert_outputs(model, ids, np.ones_like(ids), mask, xp=np)
    assert not np.allclose(segment_one["logits"], reference.logits.numpy())  # the type row matters


def test_a_one_label_classifier_from_transformers_is_a_regressor_with_its_loss(tmp_path):
    """num_labels 1: transformers' problem_type "regression", loss MSE(logits.squeeze(), labels); ours
    on the loaded folder gives the same loss (a one-class cross-entropy would give 0)."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    hf_model, folder = _saved_hf_model(tmp_path, transformers, torch, num_labels=1)
    ids, mask = _inputs(np.random.default_rng(2))
    targets = np.array([0.25, -1.5, 3.0])
    with torch.no_grad():
        reference = hf_model(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask),
                             labels=torch.tensor(targets))
    assert hf_model.config.problem_type == "regression"
    model = load_pretrained(folder, dtype="float64")
    out, _ = classify(model.params, dict(input_ids=ids, attention_mask=mask, labels=targets), model.config, xp=np)
    np.testing.assert_allclose(out.logits, reference.logits.numpy(), rtol=1e-10)
    assert float(out.loss) == pytest.approx(float(reference.loss), rel=1e-10) and float(out.loss) > 0


def test_our_one_label_classifier_opens_in_transformers_as_the_same_regressor(tmp_path):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    model = load_pretrained(_saved_hf_model(tmp_path / "hf", transformers, torch, num_labels=1)[1], dtype="float64")
    params = init_sequence_classification_params(model.config, 1, 3, xp=np, dtype="float64")
    save_pretrained(tmp_path / "ours", params, model.config, tokenizer=None)
    hf_model = transformers.AutoModelForSequenceClassification.from_pretrained(
        tmp_path / "ours", attn_implementation="eager").double().eval()
    assert hf_model.config.num_labels == 1
    ids, mask = _inputs(np.random.default_rng(3))
    targets = np.array([1.0, 0.0, -2.0])
    with torch.no_grad():
        reference = hf_model(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask),
                             labels=torch.tensor(targets))
    out, _ = classify(params, dict(input_ids=ids, attention_mask=mask, labels=targets), model.config, xp=np)
    assert hf_model.config.problem_type == "regression"
    assert float(out.loss) == pytest.approx(float(reference.loss), rel=1e-10)
