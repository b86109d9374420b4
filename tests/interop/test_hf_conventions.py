"""Hugging Face conventions a user relies on (issue #25, item 5), each against ``transformers`` itself
where it is installed: token_type_ids may be left out (zeros); a one-label sequence classifier is a
regressor (mean squared error), never a silent zero loss; ``classifier_dropout`` from a config.json
is the heads' dropout, and a saved folder writes it back; the exported pad_token_id is the padding
row the run kept gradient-free, or config.json says that the run had no such rule."""
import json

import numpy as np
import pytest

from minispanbert.config import ModelConfig
from minispanbert.family.albert import albert_config
from minispanbert.family.electra import hf_electra_config
from minispanbert.family.roberta import roberta_config
from minispanbert.finetune.loop import FinetuneConfig, model_setup
from minispanbert.finetune.sequence_classification import init_sequence_classification_params
from minispanbert.finetune.sequence_classification import sequence_classification_forward as classify
from minispanbert.finetune.token_classification import init_token_classification_params
from minispanbert.finetune.token_classification import token_classification_forward as tag
from minispanbert.interop.family import hf_family_config
from minispanbert.interop.heads import bert_outputs
from minispanbert.interop.huggingface import load_pretrained, save_pretrained
from minispanbert.keyed_random import KeyedRandom
from minispanbert.model.spanbert_loss import init_pretraining_params

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


VOCAB = ["[PAD]", "[unused0]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"w{i}" for i in range(V - 6)]


@pytest.mark.parametrize("architecture", ["BertForSequenceClassification", "BertForTokenClassification"])
def test_classifier_dropout_from_a_transformers_config_is_the_heads_dropout(tmp_path, architecture):
    """A folder whose config.json sets classifier_dropout (hidden and attention dropout 0): loading
    keeps it, the loaded head drops out at that rate in training, and fine-tuning starts from it."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    _, folder = _saved_hf_model(tmp_path, transformers, torch, architecture, num_labels=3, classifier_dropout=0.5,
                                hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    (folder / "vocab.txt").write_text("".join(token + "\n" for token in VOCAB))
    model = load_pretrained(folder, dtype="float64")
    assert model.config.classifier_dropout_prob == 0.5 and model.config.hidden_dropout_prob == 0.0
    forward = classify if architecture == "BertForSequenceClassification" else tag
    ids, mask = _inputs(np.random.default_rng(4))
    arrays = dict(input_ids=ids, attention_mask=mask)
    kept, _ = forward(model.params, arrays, model.config, xp=np)
    dropped, _ = forward(model.params, arrays, model.config, xp=np, train=True, rng=KeyedRandom(0, xp=np))
    assert not np.allclose(dropped.logits, kept.logits)  # only the head's dropout can make them differ
    without, _ = forward(model.params, arrays, model.config.replace(classifier_dropout_prob=None), xp=np, train=True,
                         rng=KeyedRandom(0, xp=np))
    np.testing.assert_array_equal(without.logits, kept.logits)
    finetune = FinetuneConfig(task="sst2", checkpoint=str(folder), dtype="float64", max_seq_len=P)
    _, model_config, *_ = model_setup(finetune, np)
    assert model_config.classifier_dropout_prob == 0.5
    (folder / "config.json").write_text((folder / "config.json").read_text().replace('"classifier_dropout": 0.5',
                                                                                  '"classifier_dropout": null'))
    assert load_pretrained(folder).config.classifier_dropout_prob is None


@pytest.mark.parametrize("rate", [0.3, None])
def test_a_saved_classifier_carries_its_classifier_dropout_to_transformers(tmp_path, rate):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    config = load_pretrained(_saved_hf_model(tmp_path / "hf", transformers, torch)[1]).config
    config = config.replace(hidden_dropout_prob=0.2, classifier_dropout_prob=rate)
    for init, auto_class in ((init_sequence_classification_params, "AutoModelForSequenceClassification"),
                             (init_token_classification_params, "AutoModelForTokenClassification")):
        folder = tmp_path / auto_class
        save_pretrained(folder, init(config, 3, 0, xp=np, dtype="float32"), config)
        hf_model = getattr(transformers, auto_class).from_pretrained(folder)
        assert hf_model.config.classifier_dropout == rate
        assert hf_model.dropout.p == (0.2 if rate is None else rate)
        assert load_pretrained(folder).config == config


PAD_NOTE = "minispanbert_padding_idx_note"
SMALL = ModelConfig(vocab_size=V, hidden_size=H, num_hidden_layers=1, num_attention_heads=2, intermediate_size=F,
                    max_position_embeddings=P, sbo_position_dim=4, sbo_max_targets=5)


@pytest.mark.parametrize("rule", [None, 0, 7])
def test_the_exported_pad_token_id_is_the_runs_padding_row_or_the_difference_is_stated(tmp_path, rule):
    """rule: ModelConfig.pad_token_id, the word row the run kept gradient-free (None: none, as BERT
    runs here). The exported pad_token_id is transformers' padding_idx; it must be that row, or
    config.json must say the run had none. Loading the folder gives back the run's rule."""
    config = SMALL.replace(pad_token_id=rule)
    folder = tmp_path / "ours"
    save_pretrained(folder, init_pretraining_params(config, 0, xp=np, dtype="float32"), config)
    saved = json.loads((folder / "config.json").read_text())
    assert saved["minispanbert_padding_idx"] == rule
    if rule is None:
        assert saved["pad_token_id"] == 0 and "without a padding_idx rule: word row 0" in saved[PAD_NOTE]
    else:
        assert saved["pad_token_id"] == rule and PAD_NOTE not in saved
    assert load_pretrained(folder).config == config
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("torch")
    embeddings = transformers.AutoModelForMaskedLM.from_pretrained(folder).bert.embeddings.word_embeddings
    assert embeddings.padding_idx == (0 if rule is None else rule)


def test_family_exports_state_their_padding_rule():
    """RoBERTa runs keep <pad> = 1 gradient-free, as transformers' padding_idx: consistent. ALBERT and
    ELECTRA runs have no rule while their configs carry pad_token_id 0: stated."""
    roberta = hf_family_config(roberta_config(SMALL))
    assert (roberta["pad_token_id"], roberta["minispanbert_padding_idx"]) == (1, 1) and PAD_NOTE not in roberta
    for hf in (hf_family_config(albert_config(SMALL)),
               hf_electra_config(SMALL.replace(model_type="electra"), "ElectraForPreTraining")):
        assert (hf["pad_token_id"], hf["minispanbert_padding_idx"]) == (0, None)
        assert "without a padding_idx rule: word row 0" in hf[PAD_NOTE]
