"""Hugging Face interop: folders built by hand in the layout ``transformers`` writes (names, shapes,
config.json, the legacy gamma/beta and stored-decoder variants) load without transformers; bad
folders stop with one line naming the file and the fix; and, with transformers + torch installed,
random Hugging Face models of every BERT architecture give the same outputs in minispanbert, our
saved folders open in ``transformers`` with the same outputs, and the tokenizer gives
``BertTokenizerFast``'s ids."""
import json
import shutil
import sys

import numpy as np
import pytest
import safetensors.numpy
from safetensors import safe_open

from minispanbert.config import ModelConfig
from minispanbert.finetune.qa_head import init_qa_params
from minispanbert.interop.heads import bert_outputs
from minispanbert.interop.huggingface import ARCHITECTURES, load_pretrained, save_pretrained
from minispanbert.interop.pretrained import load_pretrained_encoder
from minispanbert.interop.tokenizer import bert_wordpiece, load_bert_tokenizer, read_vocab, special_token_ids
from minispanbert.model.spanbert_loss import init_pretraining_params

from crash_points import run_with_a_crash

H, V, L, P, F = 8, 40, 2, 24, 16
# config.json exactly as transformers 5.24 BertConfig.save_pretrained writes it (tiny sizes).
HF_CONFIG = {
    "add_cross_attention": False, "attention_probs_dropout_prob": 0.1, "bos_token_id": None,
    "classifier_dropout": None, "dtype": "float32", "eos_token_id": None, "hidden_act": "gelu",
    "hidden_dropout_prob": 0.1, "hidden_size": H, "initializer_range": 0.02, "intermediate_size": F,
    "is_decoder": False, "layer_norm_eps": 1e-12, "max_position_embeddings": P, "model_type": "bert",
    "num_attention_heads": 2, "num_hidden_layers": L, "pad_token_id": 0, "tie_word_embeddings": True,
    "transformers_version": "5.24.0", "type_vocab_size": 2, "use_cache": True, "vocab_size": V,
}
# A BERT vocabulary in HF's order: [PAD], unused, [UNK], [CLS], [SEP], [MASK], then pieces.
VOCAB = (["[PAD]", "[unused0]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", ",", "?", "!", "the", "capital", "of",
          "france", "is", "paris", "cafe", "##s", "un", "##believ", "##able", "中", "国", "a", "b", "c"]
         + [f"x{i}" for i in range(V - 26)])


def hand_built_tensors(rng, *, heads=("mlm",), prefix="bert.", legacy=False):
    """Every tensor of a BERT model with ``heads``, named and shaped as transformers stores them."""
    ln = ("gamma", "beta") if legacy else ("weight", "bias")
    t = {
        f"{prefix}embeddings.word_embeddings.weight": rng.normal(0, 0.5, (V, H)),
        f"{prefix}embeddings.position_embeddings.weight": rng.normal(0, 0.5, (P, H)),
        f"{prefix}embeddings.token_type_embeddings.weight": rng.normal(0, 0.5, (2, H)),
        f"{prefix}embeddings.LayerNorm.{ln[0]}": 1 + rng.normal(0, 0.1, H),
        f"{prefix}embeddings.LayerNorm.{ln[1]}": rng.normal(0, 0.1, H),
    }
    for i in range(L):
        p = f"{prefix}encoder.layer.{i}."
        for name, shape in (("attention.self.query", (H, H)), ("attention.self.key", (H, H)),
                            ("attention.self.value", (H, H)), ("attention.output.dense", (H, H)),
                            ("intermediate.dense", (F, H)), ("output.dense", (H, F))):
            t[p + name + ".weight"] = rng.normal(0, 0.3, shape)
            t[p + name + ".bias"] = rng.normal(0, 0.1, shape[0])
        for name in ("attention.output.LayerNorm", "output.LayerNorm"):
            t[f"{p}{name}.{ln[0]}"] = 1 + rng.normal(0, 0.1, H)
            t[f"{p}{name}.{ln[1]}"] = rng.normal(0, 0.1, H)
    if "pooler" in heads:
        t[f"{prefix}pooler.dense.weight"], t[f"{prefix}pooler.dense.bias"] = rng.normal(0, 0.3, (H, H)), rng.normal(0, 0.1, H)
    if "mlm" in heads:
        t["cls.predictions.transform.dense.weight"] = rng.normal(0, 0.3, (H, H))
        t["cls.predictions.transform.dense.bias"] = rng.normal(0, 0.1, H)
        t[f"cls.predictions.transform.LayerNorm.{ln[0]}"] = 1 + rng.normal(0, 0.1, H)
        t[f"cls.predictions.transform.LayerNorm.{ln[1]}"] = rng.normal(0, 0.1, H)
        t["cls.predictions.bias"] = rng.normal(0, 0.1, V)
    if "qa" in heads:
        t["qa_outputs.weight"], t["qa_outputs.bias"] = rng.normal(0, 0.3, (2, H)), rng.normal(0, 0.1, 2)
    return {name: value.astype(np.float32) for name, value in t.items()}


def write_folder(path, tensors, config=None, *, vocab=VOCAB, tokenizer_config=None):
    path.mkdir(parents=True, exist_ok=True)
    safetensors.numpy.save_file(tensors, str(path / "model.safetensors"), metadata={"format": "pt"})
    (path / "config.json").write_text(json.dumps(config or {**HF_CONFIG, "architectures": ["BertForMaskedLM"]}))
    if vocab is not None:
        (path / "vocab.txt").write_text("".join(token + "\n" for token in vocab))
    if tokenizer_config is not None:
        (path / "tokenizer_config.json").write_text(json.dumps(tokenizer_config))
    return path


def canonical(name):
    name = name.replace("LayerNorm.gamma", "LayerNorm.weight").replace("LayerNorm.beta", "LayerNorm.bias")
    return name if name.startswith(("bert.", "cls.", "qa_outputs", "classifier")) else "bert." + name


# ------------------------------------------------------------------------------- without transformers


@pytest.mark.parametrize("variant", ["plain", "legacy_names_and_stored_decoder", "bertmodel_unprefixed"])
def test_hand_built_folder_loads(tmp_path, variant):
    rng = np.random.default_rng(0)
    if variant == "bertmodel_unprefixed":
        tensors = hand_built_tensors(rng, heads=("pooler",), prefix="")
        config = {**HF_CONFIG, "architectures": ["BertModel"]}
    else:
        tensors = hand_built_tensors(rng, legacy=variant != "plain")
        config = None
    extra = {}
    if variant == "legacy_names_and_stored_decoder":  # what pre-v5 BertForMaskedLM files hold
        extra = {"cls.predictions.decoder.weight": tensors["bert.embeddings.word_embeddings.weight"],
                 "cls.predictions.decoder.bias": tensors["cls.predictions.bias"],
                 "bert.embeddings.position_ids": np.arange(P, dtype=np.int64)[None]}
    model = load_pretrained(write_folder(tmp_path / variant, {**tensors, **extra}, config), dtype="float64")
    assert set(model.params) == {canonical(n) for n in tensors}
    for name, value in tensors.items():
        np.testing.assert_array_equal(model.params[canonical(name)], value.astype(np.float64))
        assert model.params[canonical(name)].dtype == np.float64
    assert sorted(model.unused) == sorted(extra)
    assert model.heads == (("pooler",) if variant == "bertmodel_unprefixed" else ("mlm",))
    assert model.config.vocab_size == V and model.config.num_hidden_layers == L
    ids = np.array([[3, 10, 11, 12, 13, 14, 5, 4]])
    out = bert_outputs(model, ids, np.zeros_like(ids), np.ones_like(ids), xp=np)
    assert out["last_hidden_state"].shape == (1, 8, H)
    assert ("logits" in out) == (variant != "bertmodel_unprefixed")


def test_sharded_folder_loads(tmp_path):
    """Large checkpoints come as model.safetensors.index.json + shards."""
    tensors = hand_built_tensors(np.random.default_rng(7))
    folder = write_folder(tmp_path / "sharded", tensors)
    (folder / "model.safetensors").unlink()
    names = sorted(tensors)
    shards = {"model-00001-of-00002.safetensors": names[:10], "model-00002-of-00002.safetensors": names[10:]}
    for file, part in shards.items():
        safetensors.numpy.save_file({n: tensors[n] for n in part}, str(folder / file), metadata={"format": "pt"})
    (folder / "model.safetensors.index.json").write_text(json.dumps(
        {"metadata": {}, "weight_map": {n: file for file, part in shards.items() for n in part}}))
    model = load_pretrained(folder)
    assert set(model.params) == set(tensors)
    (folder / "model-00002-of-00002.safetensors").unlink()
    with pytest.raises(ValueError, match=r"model-00002-of-00002\.safetensors is missing .*download every shard"):
        load_pretrained(folder)


def test_spanbert_style_config_without_architecture_infers_it(tmp_path):
    """SpanBERT's hub config.json names no architecture or model_type and omits layer_norm_eps."""
    config = {k: HF_CONFIG[k] for k in ("attention_probs_dropout_prob", "hidden_act", "hidden_dropout_prob",
                                        "hidden_size", "initializer_range", "intermediate_size",
                                        "max_position_embeddings", "num_attention_heads", "num_hidden_layers",
                                        "type_vocab_size", "vocab_size")}
    tensors = hand_built_tensors(np.random.default_rng(1), heads=("pooler", "qa"))
    model = load_pretrained(write_folder(tmp_path / "m", tensors, config))
    assert model.architecture == "BertForQuestionAnswering" and model.heads == ("qa", "pooler")
    assert model.config.layer_norm_eps == 1e-12


def error_line(exc_info):
    message = str(exc_info.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize("damage, expect", [
    ("no_config", r"config\.json is missing.*download"),
    ("wrong_shape", r"model\.safetensors: tensor 'bert\.encoder\.layer\.1\.output\.dense\.weight' has shape \(8, 15\).*config\.json"),
    ("missing_tensor", r"model\.safetensors lacks 1 tensors.*cls\.predictions\.bias.*download both again"),
    ("unknown_architecture", r"config\.json: architecture \['RobertaForMaskedLM'\] is not supported.*BertForMaskedLM"),
    ("not_bert", r"config\.json: model_type 'gpt2' is not BERT"),
    ("pickle_only", r"pytorch_model\.bin is a pickle.*torch\.load\('.*pytorch_model\.bin'.*weights_only=True.*st\.save_file"),
    ("no_weights", r"model\.safetensors is missing: download the weights"),
    ("truncated", r"model\.safetensors is truncated or not a safetensors file.*download it again"),
    ("relative_positions", r"position_embedding_type 'relative_key' is not supported"),
    ("untied_decoder", r"model\.safetensors: the MLM decoder is untied"),
    ("unknown_activation", r"hidden_act"),
    ("tokenizer_too_big", r"the tokenizer has 50 tokens but the model only 40"),
])
def test_bad_folder_one_line_error(tmp_path, damage, expect):
    rng = np.random.default_rng(2)
    tensors = hand_built_tensors(rng)
    config = {**HF_CONFIG, "architectures": ["BertForMaskedLM"]}
    vocab = VOCAB
    if damage == "wrong_shape":
        tensors["bert.encoder.layer.1.output.dense.weight"] = tensors["bert.encoder.layer.1.output.dense.weight"][:, 1:]
    elif damage == "missing_tensor":
        del tensors["cls.predictions.bias"]
    elif damage == "unknown_architecture":
        config["architectures"] = ["RobertaForMaskedLM"]
    elif damage == "not_bert":
        config["model_type"] = "gpt2"
    elif damage == "relative_positions":
        config["position_embedding_type"] = "relative_key"
    elif damage == "untied_decoder":
        config["tie_word_embeddings"] = False
        tensors["cls.predictions.decoder.weight"] = rng.normal(size=(V, H)).astype(np.float32)
    elif damage == "unknown_activation":
        config["hidden_act"] = "swishy"
    elif damage == "tokenizer_too_big":
        vocab = VOCAB + [f"y{i}" for i in range(10)]
    folder = write_folder(tmp_path / damage, tensors, config, vocab=vocab)
    if damage == "no_config":
        (folder / "config.json").unlink()
    elif damage in ("pickle_only", "no_weights"):
        (folder / "model.safetensors").unlink()
        if damage == "pickle_only":
            (folder / "pytorch_model.bin").write_bytes(b"\x80\x02}q\x00.")  # never opened
    elif damage == "truncated":
        data = (folder / "model.safetensors").read_bytes()
        (folder / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=expect) as exc_info:
        load_pretrained(folder)
    error_line(exc_info)


def test_hub_id_without_network_or_huggingface_hub_names_the_exact_download_command(tmp_path, monkeypatch):
    """A hub id ("owner/name", or a legacy bare name such as the README's bert-base-cased) that is
    no local folder is downloaded when it can be; otherwise one line gives the command to run. A
    path under a folder that exists here (runs/x) is a missing folder, never sent to the hub."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # import fails, as when it is not installed
    for hub_id, local in (("SpanBERT/spanbert-base-cased", "spanbert-base-cased"), ("bert-base-cased", "bert-base-cased")):
        with pytest.raises(ValueError, match=rf"{hub_id} is not a local folder.*`hf download {hub_id} --local-dir "
                                             rf"{local}`.* and pass {local}$") as exc_info:
            load_pretrained(hub_id)
        error_line(exc_info)
        with pytest.raises(ValueError, match=rf"hf download {hub_id} --local-dir {local}"):
            load_pretrained_encoder(hub_id, xp=np)
    (tmp_path / "runs").mkdir()
    with pytest.raises(ValueError, match=r"model folder runs/no_such_run does not exist"):
        load_pretrained("runs/no_such_run")
    with pytest.raises(ValueError, match=r"checkpoint folder runs/no_such_run does not exist"):
        load_pretrained_encoder("runs/no_such_run", xp=np)
    with pytest.raises(ValueError, match=r"model folder \.\./no_such_dir does not exist"):
        load_pretrained("../no_such_dir")


def test_tokenizer_flags_from_tokenizer_config(tmp_path):
    """BertTokenizer's defaults (lowercase, strip accents with it, split CJK) unless
    tokenizer_config.json says otherwise; ids are vocab.txt line numbers."""
    rng = np.random.default_rng(3)
    uncased = load_pretrained(write_folder(tmp_path / "u", hand_built_tensors(rng))).tokenizer
    cased = load_pretrained(write_folder(tmp_path / "c", hand_built_tensors(rng),
                                         tokenizer_config={"do_lower_case": False})).tokenizer
    text = "The Capital of France is Paris. Cafés 中国 unbelievable"
    assert uncased.encode(text).tokens == ["[CLS]", "the", "capital", "of", "france", "is", "paris", ".", "cafe",
                                           "##s", "中", "国", "un", "##believ", "##able", "[SEP]"]
    assert cased.encode(text).tokens[:3] == ["[CLS]", "[UNK]", "[UNK]"]  # "The", "Capital" are not in vocab
    assert uncased.encode("paris").ids == [3, VOCAB.index("paris"), 4]
    assert special_token_ids(uncased) == {"unk": 2, "sep": 4, "pad": 0, "cls": 3, "mask": 5}


def test_save_and_reload_spanbert_and_qa_models(tmp_path):
    """Our pretraining model (encoder + MLM + SBO) and QA model round-trip through a HF folder."""
    from minispanbert.data import train_tokenizer
    tok = train_tokenizer(["the capital of france is paris", "the cat sat on the mat"] * 5, vocab_size=60)
    config = ModelConfig(vocab_size=tok.get_vocab_size(), hidden_size=H, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=F, max_position_embeddings=P, sbo_position_dim=4, sbo_max_targets=5)
    for params, architecture, heads in (
            (init_pretraining_params(config, 0, xp=np, dtype="float64"), "BertForMaskedLM", ("mlm", "sbo")),
            (init_qa_params(config, 0, xp=np, dtype="float64"), "BertForQuestionAnswering", ("qa",))):
        folder = tmp_path / architecture
        assert save_pretrained(folder, params, config, tokenizer=tok) == architecture
        saved = json.loads((folder / "config.json").read_text())
        assert saved["architectures"] == [architecture] and saved["model_type"] == "bert"
        model = load_pretrained(folder, dtype="float64")
        assert model.architecture == architecture and model.heads == heads and model.config == config
        assert set(model.params) == set(params)
        for name in params:
            np.testing.assert_array_equal(model.params[name], params[name])
        text = "the capital of france is paris"
        assert model.tokenizer.encode(text, add_special_tokens=False).ids == tok.encode(text).ids
        assert model.tokenizer.encode(text).tokens[0] == "[CLS]"
    with pytest.raises(ValueError, match=r"only BERT-architecture models .* model_type 'roberta'"):
        save_pretrained(tmp_path / "roberta", params, config.replace(model_type="roberta", pad_token_id=0), tokenizer=tok)


# ------------------------------------------------------------------------------- with transformers


TOKENIZER_SAMPLE = [
    "Hello, World! Don't stop-believing... (really?)",
    "Café naïve résumé Ångström Zürich São Paulo",
    "中国的首都是北京。日本語のテキスト",
    "Supercalifragilisticexpialidocious antidisestablishmentarianism " + "a" * 120,
    "The capital of France is [MASK].",
    "  tabs\tand\nnewlines   ",
]


def _hf_config(transformers, **extra):
    return transformers.BertConfig(vocab_size=V, hidden_size=H, num_hidden_layers=L, num_attention_heads=2,
                                   intermediate_size=F, max_position_embeddings=P, hidden_dropout_prob=0.0,
                                   attention_probs_dropout_prob=0.0, attn_implementation="eager", **extra)


def _inputs(rng):
    ids = rng.integers(0, V, (3, 9))
    ids[1, 2] = ids[0, 2]                    # a token repeated within the batch
    types = np.zeros_like(ids)
    types[:, 5:] = 1
    mask = np.ones_like(ids)
    mask[2, 6:] = 0                           # a padded row
    return ids, types, mask


def _rel(ours, reference):
    return float(np.abs(ours - reference).max() / np.abs(reference).max())


def _hf_outputs(hf_model, torch, ids, types, mask):
    with torch.no_grad():
        out = hf_model(input_ids=torch.tensor(ids), token_type_ids=torch.tensor(types),
                       attention_mask=torch.tensor(mask), output_hidden_states=True)
    return out


@pytest.mark.parametrize("architecture, hidden_act", [(a, "gelu") for a in ARCHITECTURES] + [
    ("BertForMaskedLM", "gelu_new"), ("BertForPreTraining", "relu")])
def test_random_hf_model_gives_the_same_outputs(tmp_path, architecture, hidden_act):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    num_labels = 2 if architecture == "BertForQuestionAnswering" else 3  # HF's QA head is (num_labels, H)
    hf_model = getattr(transformers, architecture)(
        _hf_config(transformers, num_labels=num_labels, hidden_act=hidden_act)).eval()
    hf_model.save_pretrained(tmp_path, safe_serialization=True)
    ids, types, mask = _inputs(np.random.default_rng(4))
    for dtype, tolerance in (("float64", 1e-10), ("float32", 1e-5)):
        model = load_pretrained(tmp_path, dtype=dtype)
        assert model.architecture == architecture and set(ARCHITECTURES[architecture]) <= set(model.heads)
        assert model.config.hidden_act == hidden_act
        ours = bert_outputs(model, ids, types, mask, xp=np)
        reference = _hf_outputs(hf_model.to(getattr(torch, dtype)), torch, ids, types, mask)
        compared = ["last_hidden_state"]
        np_ref = {"last_hidden_state": reference.hidden_states[-1].numpy()}
        for key in ("logits", "prediction_logits", "seq_relationship_logits", "start_logits", "end_logits",
                    "pooler_output"):
            if getattr(reference, key, None) is not None:
                np_ref[key] = getattr(reference, key).numpy()
                compared.append(key)
        assert set(compared) <= set(ours), (compared, list(ours))
        for key in compared:
            assert ours[key].dtype == np.dtype(dtype)
            assert _rel(ours[key], np_ref[key]) < tolerance, (dtype, key, _rel(ours[key], np_ref[key]))


def _ours_saved_then_opened_by_transformers(tmp_path, params, config, tok, auto_class, transformers, torch):
    save_pretrained(tmp_path, params, config, tokenizer=tok)
    hf_model, info = getattr(transformers, auto_class).from_pretrained(
        tmp_path, output_loading_info=True, attn_implementation="eager")
    return hf_model.double().eval(), info


@pytest.mark.parametrize("kind", ["spanbert", "qa", "sequence_classifier", "token_classifier", "pretraining", "encoder"])
def test_saved_folder_opens_in_transformers_with_the_same_outputs(tmp_path, kind):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from minispanbert.data import train_tokenizer
    tok = train_tokenizer(["the capital of france is paris", "the cat sat on the mat"] * 5, vocab_size=V)
    config = ModelConfig(vocab_size=tok.get_vocab_size(), hidden_size=H, num_hidden_layers=L, num_attention_heads=2,
                         intermediate_size=F, max_position_embeddings=P, hidden_dropout_prob=0.0,
                         attention_probs_dropout_prob=0.0, sbo_position_dim=4, sbo_max_targets=5)
    rng = np.random.default_rng(5)
    params = init_pretraining_params(config, 0, xp=np, dtype="float64")
    pooler = {"bert.pooler.dense.weight": rng.normal(0, 0.3, (H, H)), "bert.pooler.dense.bias": rng.normal(0, 0.1, H)}
    classifier = {"classifier.weight": rng.normal(0, 0.3, (3, H)), "classifier.bias": rng.normal(0, 0.1, 3)}
    encoder = {n: v for n, v in params.items() if n.startswith("bert.")}
    auto_class, params, expected_unexpected = {
        "spanbert": ("AutoModelForMaskedLM", params, {n for n in params if n.startswith("cls.sbo.")}),
        "qa": ("AutoModelForQuestionAnswering", init_qa_params(config, 1, xp=np, dtype="float64"), set()),
        "sequence_classifier": ("AutoModelForSequenceClassification", {**encoder, **pooler, **classifier}, set()),
        "token_classifier": ("AutoModelForTokenClassification", {**encoder, **classifier}, set()),
        "encoder": ("AutoModel", {**encoder, **pooler}, set()),
        "pretraining": ("AutoModelForPreTraining",
                        {**{n: v for n, v in params.items() if not n.startswith("cls.sbo.")}, **pooler,
                         "cls.seq_relationship.weight": rng.normal(0, 0.3, (2, H)),
                         "cls.seq_relationship.bias": rng.normal(0, 0.1, 2)}, set()),
    }[kind]
    for name in params:  # non-trivial biases and LayerNorm so every tensor matters
        if name.endswith("bias"):
            params[name] = params[name] + rng.normal(0, 0.1, params[name].shape)
    hf_model, info = _ours_saved_then_opened_by_transformers(tmp_path, params, config, tok, auto_class,
                                                             transformers, torch)
    assert info["missing_keys"] == set() or not info["missing_keys"], info
    assert set(info["unexpected_keys"]) == expected_unexpected, info
    assert not info["mismatched_keys"], info
    ids, types, mask = _inputs(np.random.default_rng(6))
    model = load_pretrained(tmp_path, dtype="float64")
    ours = bert_outputs(model, ids, types, mask, xp=np)
    reference = _hf_outputs(hf_model, torch, ids, types, mask)
    keys = [k for k in ("logits", "prediction_logits", "seq_relationship_logits", "start_logits", "end_logits",
                        "pooler_output") if getattr(reference, k, None) is not None]
    assert keys
    for key in keys:
        assert _rel(ours[key], getattr(reference, key).numpy()) < 1e-10, key
    hf_tok = transformers.AutoTokenizer.from_pretrained(tmp_path)
    text = "the capital of france is paris"
    assert hf_tok(text)["input_ids"] == model.tokenizer.encode(text).ids
    hf_model.save_pretrained(tmp_path / "resaved")  # the tensor names transformers itself writes
    with safe_open(tmp_path / "model.safetensors", "np") as ours_file, \
            safe_open(tmp_path / "resaved" / "model.safetensors", "np") as theirs_file:
        assert set(ours_file.keys()) - expected_unexpected == set(theirs_file.keys())
    assert hf_tok(text)["input_ids"][1:-1] == tok.encode(text).ids


def test_a_duplicated_vocab_line_keeps_its_last_id_as_the_references_do(tmp_path):
    """Some released vocab.txt files repeat a line. The Rust WordPiece that BertTokenizerFast runs
    (``WordPiece.from_file``) and transformers' ``load_vocab`` both keep the LAST line's id."""
    from tokenizers import Tokenizer, models
    lines = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "cat", "the", "dog"]
    (tmp_path / "vocab.txt").write_text("\n".join(lines) + "\n")
    ours = read_vocab(tmp_path / "vocab.txt")
    assert ours["the"] == 7 and ours["cat"] == 6 and ours["dog"] == 8
    rust = Tokenizer(models.WordPiece.from_file(str(tmp_path / "vocab.txt"), unk_token="[UNK]"))
    assert all(rust.token_to_id(token) == ours[token] for token in lines)
    assert load_bert_tokenizer(tmp_path).encode("the dog", add_special_tokens=False).ids == [7, 8]


@pytest.mark.parametrize("do_lower_case", [True, False])
def test_tokenizer_ids_equal_bert_tokenizer_fast(tmp_path, do_lower_case):
    transformers = pytest.importorskip("transformers")
    from minispanbert.data import train_tokenizer
    # a vocabulary that knows some accented / CJK pieces, so the flags matter beyond [UNK]
    trained = train_tokenizer([t.lower() for t in TOKENIZER_SAMPLE] + TOKENIZER_SAMPLE + ["cafe naive resume"] * 3,
                              vocab_size=300)
    vocab = [token for token, _ in sorted(trained.get_vocab().items(), key=lambda item: item[1])]
    (tmp_path / "vocab.txt").write_text("".join(token + "\n" for token in vocab))
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": do_lower_case}))
    ours = load_bert_tokenizer(tmp_path)
    reference = transformers.BertTokenizerFast(vocab={t: i for i, t in enumerate(vocab)}, do_lower_case=do_lower_case)
    also = transformers.BertTokenizerFast.from_pretrained(tmp_path)  # vocab.txt + tokenizer_config.json
    for text in TOKENIZER_SAMPLE:
        assert ours.encode(text).ids == reference(text)["input_ids"] == also(text)["input_ids"], text
        pair = ours.encode(text, "a second segment")
        ref_pair = reference(text, "a second segment")
        assert pair.ids == ref_pair["input_ids"] and pair.type_ids == ref_pair["token_type_ids"]
    accented = ours.encode("Café").tokens
    assert ("cafe" in accented) == do_lower_case



def folder_contents(folder) -> dict:
    """Each file's bytes; a safetensors file's tensors and metadata instead (its writer orders the
    metadata's keys differently each time)."""
    contents = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        if path.suffix == ".safetensors":
            with safe_open(path, "np") as f:
                tensors = {name: (str(f.get_tensor(name).dtype), f.get_tensor(name).tobytes()) for name in f.keys()}
                contents[path.name] = (f.metadata(), tensors)
        else:
            contents[str(path.relative_to(folder))] = path.read_bytes()
    return contents


def test_an_export_killed_at_any_change_leaves_the_old_folder_or_the_complete_new_one(tmp_path):
    """An export appears complete or not at all: a folder exported from run A is re-exported from run
    B with --overwrite, killed just before each of that export's changes to the disk in turn. Every
    time the folder holds byte for byte A's export or B's (and loads as such); a first export killed
    anywhere leaves no folder or B's; the next export succeeds and leaves nothing hidden behind."""
    from minispanbert.data import train_tokenizer
    from minispanbert.engine.runs.checkpoint import save_checkpoint
    from minispanbert.interop.export_hf import main as export_main
    tok = train_tokenizer(["the capital of france is paris"] * 3, vocab_size=40)
    config = ModelConfig(vocab_size=tok.get_vocab_size(), hidden_size=H, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=F, max_position_embeddings=P, sbo_position_dim=4, sbo_max_targets=5)
    runs = {}
    for name, seed in (("a", 0), ("b", 1)):
        runs[name] = init_pretraining_params(config, seed, xp=np)
        save_checkpoint(tmp_path / f"run_{name}", params=runs[name], step=1, config={"model": config.to_dict()},
                        files={"tokenizer.json": tok.to_str()})
    export = {name: ["--checkpoint", str(tmp_path / f"run_{name}"), "--out"] for name in runs}
    for name in runs:
        export_main([*export[name], str(tmp_path / f"hf_{name}")])
    contents = {name: folder_contents(tmp_path / f"hf_{name}") for name in runs}
    assert contents["a"] != contents["b"]
    changes = run_with_a_crash(lambda: export_main([*export["b"], str(tmp_path / "traced"), "--overwrite"]), 0)
    assert len(changes) >= 8  # weights, config, three tokenizer files, the staging folder and its move
    for k in range(1, len(changes) + 1):
        for first in (False, True):
            out = tmp_path / f"{'first' if first else 'again'}{k}"
            if not first:
                shutil.copytree(tmp_path / "hf_a", out)
            run_with_a_crash(lambda: export_main([*export["b"], str(out), "--overwrite"]), crash_at=k)
            found = folder_contents(out) if out.exists() else None
            accepted = [None, contents["b"]] if first else [contents["a"], contents["b"]]
            assert found in accepted, k
            if found is not None:
                loaded = load_pretrained(out).params
                expected = runs["a"] if found == contents["a"] else runs["b"]
                assert all(np.array_equal(loaded[name], expected[name]) for name in expected), k
            export_main([*export["b"], str(out), "--overwrite"])
            assert folder_contents(out) == contents["b"], k
            assert [p.name for p in tmp_path.iterdir() if p.name.startswith(f".{out.name}.")] == [], k


def test_bert_wordpiece_round_trip_through_transformers_folder(tmp_path):
    """A folder transformers wrote (vocab.txt + tokenizer.json + tokenizer_config.json) loads to the
    same ids, for an uncased and a strip_accents=False lowercase tokenizer."""
    transformers = pytest.importorskip("transformers")
    for name, kwargs in (("uncased", {}), ("keep_accents", {"strip_accents": False})):
        hf = transformers.BertTokenizerFast(vocab={t: i for i, t in enumerate(VOCAB)}, **kwargs)
        hf.save_pretrained(tmp_path / name)
        ours = load_bert_tokenizer(tmp_path / name)
        reference = bert_wordpiece({t: i for i, t in enumerate(VOCAB)}, **kwargs)
        for text in TOKENIZER_SAMPLE:
            assert ours.encode(text).ids == hf(text)["input_ids"] == reference.encode(text).ids, (name, text)


def test_export_cli_run_folder_and_random_init(tmp_path, capsys):
    """A minispanbert run folder (checkpoint + tokenizer.json) exports to a folder that loads back with
    the same tensors; --random-init writes a preset-sized model; a run folder is never overwritten."""
    from minispanbert.data import train_tokenizer
    from minispanbert.engine.runs.checkpoint import save_checkpoint
    from minispanbert.interop.export_hf import main as export_main
    tok = train_tokenizer(["the capital of france is paris"] * 3, vocab_size=40)
    config = ModelConfig(vocab_size=tok.get_vocab_size(), hidden_size=H, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=F, max_position_embeddings=P, sbo_position_dim=4, sbo_max_targets=5)
    params = init_pretraining_params(config, 0, xp=np)
    save_checkpoint(tmp_path / "run", params=params, step=3, config={"model": config.to_dict()},
                    files={"tokenizer.json": tok.to_str()})
    assert export_main(["--checkpoint", str(tmp_path / "run"), "--out", str(tmp_path / "hf")]) == "BertForMaskedLM"
    model = load_pretrained(tmp_path / "hf")
    assert model.config == config and set(model.params) == set(params)
    for name in params:
        np.testing.assert_array_equal(model.params[name], params[name])
    assert export_main(["--random-init", "tiny", "--head", "qa", "--tokenizer", str(tmp_path / "run"),
                        "--out", str(tmp_path / "random")]) == "BertForQuestionAnswering"
    random = load_pretrained(tmp_path / "random")
    assert random.config.hidden_size == 128 and random.config.vocab_size == tok.get_vocab_size()
    weights = tmp_path / "run" / "checkpoints" / "step-000003" / "model.safetensors"
    before = weights.read_bytes()
    with pytest.raises(SystemExit, match=r"^error: .*is a minispanbert run folder.*choose another --out$"):
        export_main(["--checkpoint", str(tmp_path / "run"), "--out", str(tmp_path / "run"), "--overwrite"])
    with pytest.raises(SystemExit, match=r"^error: --out .* holds the --checkpoint folder: choose an --out outside"):
        export_main(["--checkpoint", str(tmp_path / "run"), "--out", str(tmp_path), "--overwrite"])
    assert weights.read_bytes() == before
    (tmp_path / "hf" / "notes.txt").write_text("mine")
    with pytest.raises(SystemExit, match=r"^error: --out .*hf already holds files: choose another --out, or pass "
                                         r"--overwrite"):
        export_main(["--checkpoint", str(tmp_path / "run"), "--out", str(tmp_path / "hf")])
    assert (tmp_path / "hf" / "notes.txt").read_text() == "mine"
    export_main(["--checkpoint", str(tmp_path / "run"), "--out", str(tmp_path / "hf"), "--overwrite"])
    assert not (tmp_path / "hf" / "notes.txt").exists() and load_pretrained(tmp_path / "hf").config == config
