"""Hugging Face conventions a user relies on (issue #25, item 5), each against ``transformers`` itself
where it is installed: token_type_ids may be left out (zeros)."""
import numpy as np
import pytest

from minispanbert.interop.heads import bert_outputs
from minispanbert.interop.huggingface import load_pretrained

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
