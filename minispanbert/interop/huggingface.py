"""Hugging Face BERT model folders in and out: real pretrained weights (BERT, SpanBERT, their SQuAD
and classification fine-tunes) run in the NumPy engine, and minispanbert models open in
``transformers``.

A folder is what ``save_pretrained`` writes (bert-family-spec §2, names checked on transformers 5.24):

    config.json            BertConfig fields + "architectures"
    model.safetensors      tensors keyed by Hugging Face names (or model.safetensors.index.json + shards)
    vocab.txt / tokenizer.json / tokenizer_config.json    the WordPiece tokenizer (`interop.tokenizer`)

Architectures and the heads they carry (names as ``state_dict`` writes them; shapes (out, in)):

    BertModel                      pooler (bert.pooler.dense (H, H)); written WITHOUT the "bert." prefix
    BertForMaskedLM                mlm (cls.predictions.transform.*, cls.predictions.bias (V,))
    BertForPreTraining             pooler, mlm, nsp (cls.seq_relationship (2, H))
    BertForQuestionAnswering       qa (qa_outputs (2, H))
    BertForSequenceClassification  pooler, sequence_classifier (classifier (num_labels, H))
    BertForTokenClassification     token_classifier (classifier (num_labels, H))

SpanBERT's checkpoints are BERT (there is no SpanBERT class); their config.json names no
architecture, which is then read off the tensors present. minispanbert's SBO head is saved as
``cls.sbo.*``: no Hugging Face class has it, so ``transformers`` reports exactly those tensors as
unexpected and ignores them.

What real checkpoints contain, and what loading does with it:
- names without the "bert." prefix (BertModel's own files): the prefix is added;
- legacy ``LayerNorm.gamma`` / ``LayerNorm.beta`` (early BERT ports): renamed weight / bias;
- ``cls.predictions.decoder.weight``, the tied copy of the word embeddings, stored or absent: with
  ``tie_word_embeddings`` (the default) ``transformers`` ignores the stored copy and so do we; an
  untied decoder is refused (minispanbert's MLM head is tied); ``cls.predictions.decoder.bias`` is
  the alias of ``cls.predictions.bias`` (used only when the latter is absent);
- ``bert.embeddings.position_ids``, a buffer of old files: ignored;
- no MLM head (a BertModel / SQuAD fine-tune): loads; ``heads`` says so and fill-mask refuses;
- ``pad_token_id``: every BertConfig has one (default 0) and ``transformers`` builds the word
  embeddings with padding_idx = pad_token_id (that row gets no gradient in further training;
  outputs do not depend on it). minispanbert's BERT runs have no such rule (ModelConfig.pad_token_id
  None), so a real checkpoint loads with None; our saves write the rule the run used under
  ``minispanbert_padding_idx`` (read back on load) and, where it differs from pad_token_id, say so
  in ``minispanbert_padding_idx_note`` (:func:`padding_rule_keys`);
- ``classifier_dropout`` (BertConfig's rate before the classifier heads; None: hidden_dropout_prob)
  becomes ModelConfig.classifier_dropout_prob, which the sequence and token heads use; saving
  writes it back under that name;
- ``hidden_act`` other than what the config supports, ``position_embedding_type`` other than
  "absolute", decoder / cross-attention configs: refused with one line;
- only a pickled ``pytorch_model.bin``: refused with the command that converts it (we never
  unpickle: pickle runs code).
Every problem is a one-line ValueError naming the file and the fix.
"""
from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from safetensors import SafetensorError, safe_open

from minispanbert.backend import check_dtype
from minispanbert.config import ModelConfig
from minispanbert.engine.runs.atomic import write_text_atomic
from minispanbert.engine.runs.checkpoint import VOCAB_SHA256, check_vocab, check_weight, save_params, vocab_fingerprint
from minispanbert.finetune.qa_head import init_qa_head_params
from minispanbert.finetune.sequence_classification import CLASSIFIER, POOLER, init_sequence_classification_head_params
from minispanbert.finetune.token_classification import init_token_classification_head_params
from minispanbert.interop.tokenizer import load_bert_tokenizer, save_bert_tokenizer, special_token_ids
from minispanbert.model.encoder import init_encoder_params, linear_init
from minispanbert.model.mlm_head import init_mlm_head_params
from minispanbert.model.sbo_head import init_sbo_head_params

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
WEIGHTS_INDEX_FILE = "model.safetensors.index.json"
PICKLE_FILE = "pytorch_model.bin"
DOWNLOAD_PATTERNS = ["config.json", "*.safetensors", "model.safetensors.index.json", "vocab.txt", "tokenizer.json",
                     "tokenizer_config.json", "special_tokens_map.json"]

ARCHITECTURES: dict[str, tuple[str, ...]] = {
    "BertModel": ("pooler",),
    "BertForMaskedLM": ("mlm",),
    "BertForPreTraining": ("pooler", "mlm", "nsp"),
    "BertForQuestionAnswering": ("qa",),
    "BertForSequenceClassification": ("pooler", "sequence_classifier"),
    "BertForTokenClassification": ("token_classifier",),
}
# BertConfig defaults for fields a config.json may omit (SpanBERT's omits layer_norm_eps).
HF_DEFAULTS = {"max_position_embeddings": 512, "type_vocab_size": 2, "hidden_dropout_prob": 0.1,
               "attention_probs_dropout_prob": 0.1, "layer_norm_eps": 1e-12, "initializer_range": 0.02,
               "hidden_act": "gelu"}
REQUIRED_CONFIG = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size")
PREFIX = "bert."
UNPREFIXED = ("embeddings.", "encoder.", "pooler.")
TIED_DECODER = "cls.predictions.decoder.weight"
DECODER_BIAS_ALIAS = "cls.predictions.decoder.bias"
IGNORED = ("bert.embeddings.position_ids",)
NSP = "cls.seq_relationship."
# in config.json: ModelConfig.pad_token_id, the row the run kept gradient-free (null: none), and a
# note where transformers' padding_idx (= pad_token_id) differs from it (padding_rule_keys)
HF_PADDING_IDX_KEY, HF_PADDING_NOTE_KEY = "minispanbert_padding_idx", "minispanbert_padding_idx_note"


def conversion_command(directory) -> str:
    """The shell command that turns a folder's pickled pytorch_model.bin into model.safetensors
    (PyTorch's restricted ``weights_only`` unpickler; clone() unshares the tied tensors, which
    safetensors refuses to write twice)."""
    d = str(directory)
    return (f"python -c \"import torch, safetensors.torch as st; "
            f"sd = torch.load('{d}/{PICKLE_FILE}', map_location='cpu', weights_only=True); "
            f"st.save_file({{k: v.contiguous().clone() for k, v in sd.items()}}, '{d}/{WEIGHTS_FILE}', "
            f"metadata={{'format': 'pt'}})\"")


@dataclass
class PretrainedModel:
    """A loaded folder. ``params`` (on the backend, in ``dtype``) are keyed by minispanbert's names
    (Hugging Face names with the "bert." prefix); ``heads`` lists the heads present (see the module
    docstring: pooler, mlm, nsp, qa, sequence_classifier, token_classifier, sbo); ``labels`` is
    id2label in id order for classifiers; ``unused`` the stored tensors nothing reads."""

    config: ModelConfig
    params: dict
    tokenizer: object
    architecture: str
    heads: tuple[str, ...]
    labels: list[str] | None
    source: Path
    hf_config: dict
    unused: list[str]


# --------------------------------------------------------------------------- where the files are


def looks_like_hub_id(model) -> bool:
    """"owner/name" or a legacy bare "name" (bert-base-cased) that is not a local path: no folder
    of that name here, and no local folder "owner" (runs/x with runs/ present is a missing run)."""
    text = str(model)
    if not re.fullmatch(r"(?:[A-Za-z0-9][\w.-]*/)?[A-Za-z0-9][\w.-]*", text) or ".." in text or Path(text).exists():
        return False
    return "/" not in text or not Path(text.split("/")[0]).is_dir()


def resolve_model_path(model) -> Path:
    """A local folder, or a hub id ("owner/name", or a legacy "name" such as bert-base-cased)
    downloaded with huggingface_hub when it is installed and the network is there; otherwise a
    one-line ValueError naming the exact download command."""
    path = Path(model)
    if path.is_dir():
        return path
    if path.exists():
        raise ValueError(f"{path} is a file: pass the model FOLDER (holding {CONFIG_FILE} and {WEIGHTS_FILE})")
    if not looks_like_hub_id(model):
        raise ValueError(f"model folder {path} does not exist: pass a folder holding {CONFIG_FILE} and "
                         f"{WEIGHTS_FILE}, or a hub id such as SpanBERT/spanbert-base-cased")
    local = str(model).split("/")[-1]
    how = (f"download it once with `hf download {model} --local-dir {local}` (pip install huggingface_hub; "
           f"network needed) and pass {local}")
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise ValueError(f"{model} is not a local folder, and as a hub id it needs huggingface_hub: {how}") from None
    try:
        return Path(snapshot_download(str(model), allow_patterns=DOWNLOAD_PATTERNS))
    except Exception as exc:  # offline, unknown repo, gated repo: huggingface_hub raises many types
        raise ValueError(f"{model} is not a local folder, and the Hugging Face Hub did not give it "
                         f"({type(exc).__name__}: offline, or no such model): {how}") from None


# --------------------------------------------------------------------------- config


def read_hf_config(directory: Path) -> dict:
    path = directory / CONFIG_FILE
    if not path.is_file() and ((directory / "checkpoints").is_dir() or (directory / "trainer_state.json").is_file()):
        raise ValueError(f"{directory} is a minispanbert run folder, not a Hugging Face one: export it first with "
                         f"python -m minispanbert.export_hf --checkpoint {directory} --out {directory}-hf")
    if not path.is_file():
        raise ValueError(f"{path} is missing: a Hugging Face model folder needs its config.json; download it "
                         f"with the weights (hf download OWNER/NAME --local-dir {directory})")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path} is not valid JSON ({exc}): download it again") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path} must hold a JSON object of BertConfig fields: download it again")
    return data


def model_config_from_hf(hf: dict, path: Path) -> ModelConfig:
    """BertConfig fields -> ModelConfig (every field ModelConfig has; SBO fields only from our own
    folders), refusing what the engine does not compute."""
    model_type = hf.get("model_type", "bert")
    if model_type != "bert":
        raise ValueError(f"{path}: model_type {model_type!r} is not BERT; minispanbert loads BERT-architecture "
                         f"checkpoints (BERT, SpanBERT): pass one of those")
    for key in ("is_decoder", "add_cross_attention"):
        if hf.get(key):
            raise ValueError(f"{path}: {key} is true, but minispanbert runs the bidirectional BERT encoder only; "
                             "pass an encoder checkpoint")
    position_type = hf.get("position_embedding_type", "absolute")
    if position_type != "absolute":
        raise ValueError(f"{path}: position_embedding_type {position_type!r} is not supported (minispanbert "
                         "implements BERT's absolute position embeddings); pass a checkpoint with \"absolute\"")
    missing = [key for key in REQUIRED_CONFIG if key not in hf]
    if missing:
        raise ValueError(f"{path} lacks {', '.join(missing)}: it is not a BERT config.json; download it again")
    fields = {f.name for f in dataclasses.fields(ModelConfig)}
    values = {**{k: v for k, v in HF_DEFAULTS.items() if k in fields}, **{k: hf[k] for k in fields if k in hf}}
    if "classifier_dropout" in hf:  # BertConfig's name for the classifier heads' rate (None: hidden_dropout_prob)
        values["classifier_dropout_prob"] = hf["classifier_dropout"]
    # Every BertConfig carries pad_token_id (default 0); ModelConfig.pad_token_id switches on the
    # padding_idx rule (no lookup gradient to that row), which minispanbert's BERT leaves off unless
    # the folder is one of ours recording the rule its run used.
    values.pop("pad_token_id", None)
    if HF_PADDING_IDX_KEY in hf:
        values["pad_token_id"] = hf[HF_PADDING_IDX_KEY]
    act = hf.get("hidden_act", HF_DEFAULTS["hidden_act"])
    if "hidden_act" not in fields and act != "gelu":
        raise ValueError(f"{path}: hidden_act {act!r} is not supported by this minispanbert (erf \"gelu\" only); "
                         "pass a checkpoint with hidden_act \"gelu\"")
    try:
        return ModelConfig(**values)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{path}: {exc}") from None


def architecture_of(hf: dict, names, path: Path) -> str:
    """config.json's architecture, or (SpanBERT's configs name none) the one the tensors imply."""
    listed = hf.get("architectures") or []
    if listed:
        if len(listed) != 1 or listed[0] not in ARCHITECTURES:
            raise ValueError(f"{path}: architecture {listed} is not supported; minispanbert loads "
                             f"{', '.join(ARCHITECTURES)} (SpanBERT checkpoints are BERT)")
        return listed[0]
    names = set(names)
    if NSP + "weight" in names:
        return "BertForPreTraining"
    if "cls.predictions.transform.dense.weight" in names:
        return "BertForMaskedLM"
    if "qa_outputs.weight" in names:
        return "BertForQuestionAnswering"
    if CLASSIFIER + "weight" in names:
        return "BertForSequenceClassification" if POOLER + "weight" in names else "BertForTokenClassification"
    return "BertModel"


def num_labels_of(hf: dict) -> int:
    if "id2label" in hf:
        return len(hf["id2label"])
    return int(hf.get("num_labels", 2))


# --------------------------------------------------------------------------- names and shapes


class _ShapeOnly:
    """Stands in for a numpy Generator in the init_* functions: returns read-only zero views of the
    requested shape without allocating, so the expected names and shapes of a base-size model come
    from the same code that creates minispanbert's parameters."""

    def normal(self, loc=0.0, scale=1.0, size=None):
        return np.broadcast_to(np.float64(loc), size)


def expected_shapes(config: ModelConfig, heads, num_labels: int = 2) -> dict[str, tuple[int, ...]]:
    """Name -> shape of every tensor the encoder plus ``heads`` need (our names)."""
    rng, H, std = _ShapeOnly(), config.hidden_size, config.initializer_range
    arrays = dict(init_encoder_params(config, rng))
    if "pooler" in heads:
        linear_init(arrays, POOLER, H, H, rng, std)
    if "mlm" in heads:
        arrays.update(init_mlm_head_params(config, rng))
    if "nsp" in heads:
        linear_init(arrays, NSP, 2, H, rng, std)
    if "qa" in heads:
        arrays.update(init_qa_head_params(config, rng))
    if "sequence_classifier" in heads:
        arrays.update(init_sequence_classification_head_params(config, num_labels, rng))
    if "token_classifier" in heads:
        arrays.update(init_token_classification_head_params(config, num_labels, rng))
    if "sbo" in heads:
        arrays.update(init_sbo_head_params(config, rng))
    return {name: tuple(a.shape) for name, a in arrays.items()}


def canonical_name(name: str) -> str:
    """A stored tensor name -> minispanbert's: "bert." prefix added, legacy gamma / beta renamed."""
    if name.endswith("LayerNorm.gamma"):
        name = name[: -len("gamma")] + "weight"
    elif name.endswith("LayerNorm.beta"):
        name = name[: -len("beta")] + "bias"
    if name.startswith(UNPREFIXED):
        name = PREFIX + name
    return name


def heads_present(names) -> tuple[str, ...]:
    """Which optional heads the (canonical) names hold, beyond the architecture's own."""
    names, heads = set(names), []
    for head, probe in (("pooler", POOLER + "weight"), ("mlm", "cls.predictions.transform.dense.weight"),
                        ("nsp", NSP + "weight"), ("qa", "qa_outputs.weight"), ("sbo", "cls.sbo.mlp.0.dense.weight")):
        if probe in names:
            heads.append(head)
    return tuple(heads)


# --------------------------------------------------------------------------- reading tensors


def weight_files(directory: Path) -> list[Path]:
    """model.safetensors, or the shards a model.safetensors.index.json lists; refuses pickles."""
    if (directory / WEIGHTS_FILE).is_file():
        return [directory / WEIGHTS_FILE]
    index = directory / WEIGHTS_INDEX_FILE
    if index.is_file():
        try:
            shards = sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, AttributeError, TypeError) as exc:
            raise ValueError(f"{index} is not a valid safetensors index ({exc}): download it again") from None
        missing = [s for s in shards if not (directory / s).is_file()]
        if missing:
            raise ValueError(f"{directory / missing[0]} is missing ({index} lists it): download every shard")
        return [directory / s for s in shards]
    if (directory / PICKLE_FILE).is_file():
        raise ValueError(f"{directory / PICKLE_FILE} is a pickle, which minispanbert never opens (unpickling runs "
                         f"code); convert it once to {WEIGHTS_FILE} with: {conversion_command(directory)}")
    raise ValueError(f"{directory / WEIGHTS_FILE} is missing: download the weights (hf download OWNER/NAME "
                     f"--local-dir {directory}); if the repository has only {PICKLE_FILE}, download that and "
                     f"convert it with: {conversion_command(directory)}")


HF_VOCAB_KEY = "minispanbert_vocab_sha256"  # in config.json: the fingerprint of the tokenizer saved beside
BUFFER_SUFFIXES = ("position_ids", "token_type_ids")  # integer buffers of old files, never read as weights


def read_tensors(files, *, xp, dtype) -> tuple[dict, dict]:
    """(name -> array on xp in dtype, keyed by canonical names), (canonical name -> file)."""
    tensors, origin = {}, {}
    for path in files:
        try:
            with safe_open(path, framework="numpy") as handle:
                for stored in handle.keys():
                    name = canonical_name(stored)
                    if name in tensors:
                        raise ValueError(f"{path} holds {stored!r} twice (with and without the 'bert.' prefix or "
                                         "as gamma/beta and weight/bias): re-save the model with one naming")
                    array = handle.get_tensor(stored)
                    check_weight(array, f"{path}: tensor {stored!r}", buffer=name.endswith(BUFFER_SUFFIXES))
                    tensors[name] = xp.asarray(array.astype(dtype, copy=False))
                    origin[name] = path
        except (SafetensorError, OSError, TypeError) as exc:
            first_line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise ValueError(f"{path} is truncated or not a safetensors file ({first_line}): download it "
                             "again") from None
    return tensors, origin


def _resolve_aliases(tensors: dict, hf: dict, path: Path) -> list[str]:
    """Drop the tied decoder copy, the decoder-bias alias and old buffers; return what was dropped."""
    dropped = [name for name in IGNORED if tensors.pop(name, None) is not None]
    if DECODER_BIAS_ALIAS in tensors:
        bias = tensors.pop(DECODER_BIAS_ALIAS)
        tensors.setdefault("cls.predictions.bias", bias)
        dropped.append(DECODER_BIAS_ALIAS)
    if TIED_DECODER in tensors:
        if not hf.get("tie_word_embeddings", True):
            raise ValueError(f"{path}: the MLM decoder is untied (tie_word_embeddings false), but minispanbert's "
                             "MLM head is tied to the word embeddings; pass a checkpoint with tied embeddings")
        tensors.pop(TIED_DECODER)  # transformers ties it to the word embeddings and ignores the copy
        dropped.append(TIED_DECODER)
    return dropped


# --------------------------------------------------------------------------- load and save


def load_pretrained(model, *, xp=np, dtype="float32") -> PretrainedModel:
    """Load a Hugging Face BERT folder (or hub id, see :func:`resolve_model_path`) -> PretrainedModel.

    Raises a one-line ValueError naming the file and the fix for every problem listed in the module
    docstring (missing config, unknown architecture, pickle only, truncated file, missing tensors,
    wrong shapes)."""
    dtype = check_dtype(dtype)
    directory = resolve_model_path(model)
    hf = read_hf_config(directory)
    config_path = directory / CONFIG_FILE
    config = model_config_from_hf(hf, config_path)
    files = weight_files(directory)
    tensors, origin = read_tensors(files, xp=xp, dtype=dtype)
    weights_name = files[0] if len(files) == 1 else directory / WEIGHTS_INDEX_FILE
    dropped = _resolve_aliases(tensors, hf, weights_name)

    architecture = architecture_of(hf, tensors, config_path)
    heads = tuple(dict.fromkeys(ARCHITECTURES[architecture] + heads_present(tensors)))
    num_labels = num_labels_of(hf)
    shapes = expected_shapes(config, heads, num_labels)
    missing = [name for name in shapes if name not in tensors]
    if missing:
        raise ValueError(f"{weights_name} lacks {len(missing)} tensors that {architecture} with this "
                         f"{CONFIG_FILE} needs (e.g. {missing[0]!r}): the weights and config.json belong to "
                         "different models; download both again")
    for name, shape in shapes.items():
        if tuple(tensors[name].shape) != shape:
            raise ValueError(f"{origin[name]}: tensor {name!r} has shape {tuple(tensors[name].shape)} but "
                             f"{config_path} implies {shape}: the weights and config.json belong to different "
                             "models; download both again")
    params = {name: tensors[name] for name in shapes}
    unused = sorted(set(tensors) - set(params)) + dropped

    tokenizer = load_bert_tokenizer(directory)
    if tokenizer is not None:  # a folder minispanbert wrote records its vocabulary's fingerprint
        check_vocab({VOCAB_SHA256: hf.get(HF_VOCAB_KEY)}, tokenizer, f"the tokenizer of {directory}")
    if tokenizer is not None and tokenizer.get_vocab_size() > config.vocab_size:
        raise ValueError(f"{directory}: the tokenizer has {tokenizer.get_vocab_size()} tokens but the model only "
                         f"{config.vocab_size}: the vocab.txt / tokenizer.json belongs to another model")
    labels = None
    if architecture in ("BertForSequenceClassification", "BertForTokenClassification"):
        id2label = hf.get("id2label") or {}
        labels = [str(id2label.get(str(i), id2label.get(i, f"LABEL_{i}"))) for i in range(num_labels)]
    return PretrainedModel(config=config, params=params, tokenizer=tokenizer, architecture=architecture,
                           heads=heads, labels=labels, source=directory, hf_config=hf, unused=unused)


def infer_architecture(params) -> str:
    """The Hugging Face class a parameter dict fits: the most specific head present wins."""
    heads = heads_present(params)
    if CLASSIFIER + "weight" in params:
        return "BertForSequenceClassification" if "pooler" in heads else "BertForTokenClassification"
    for architecture in ("BertForQuestionAnswering", "BertForPreTraining", "BertForMaskedLM", "BertModel"):
        if all(head in heads for head in ARCHITECTURES[architecture]):
            return architecture
    raise ValueError("these parameters have no head and no pooler (bert.pooler.dense.*), so no Hugging Face "
                     "class holds exactly them; add a pooler or a head before saving")


def padding_rule_keys(config, pad_token_id: int) -> dict:
    """config.json's pad_token_id for a run, and the padding_idx rule the run used. transformers'
    embeddings take padding_idx = pad_token_id: that word row (RoBERTa: and position row) gets no
    gradient if the model is trained further. A run with the rule (ModelConfig.pad_token_id an id)
    writes that id; a run without it (None) writes ``pad_token_id`` (its tokenizer's) and a note
    that the row was trained like any other. ``HF_PADDING_IDX_KEY`` records the rule either way."""
    if config.pad_token_id is not None:
        return {"pad_token_id": config.pad_token_id, HF_PADDING_IDX_KEY: config.pad_token_id}
    return {"pad_token_id": pad_token_id, HF_PADDING_IDX_KEY: None, HF_PADDING_NOTE_KEY: (
        f"minispanbert trained this model without a padding_idx rule: word row {pad_token_id} (the padding token) "
        "got gradient like every row; transformers uses padding_idx = pad_token_id, which changes no output but "
        "keeps that row fixed if you train the model further")}


def hf_config_dict(config: ModelConfig, architecture: str, *, pad_token_id: int = 0, labels=None) -> dict:
    """config.json for ``config``: every ModelConfig field under its BertConfig name (the SBO fields
    ride along; transformers keeps unknown keys), plus what BertConfig needs to rebuild the model
    (``classifier_dropout``: BertConfig's name for classifier_dropout_prob; pad_token_id and the
    padding rule: :func:`padding_rule_keys`, ``pad_token_id`` being the tokenizer's)."""
    data = {"architectures": [architecture], "model_type": "bert", **config.to_dict()}
    data.setdefault("hidden_act", "gelu")
    data.update(tie_word_embeddings=True, classifier_dropout=config.classifier_dropout_prob,
                **padding_rule_keys(config, pad_token_id))
    if labels is not None:
        data["id2label"] = {str(i): str(label) for i, label in enumerate(labels)}
        data["label2id"] = {str(label): i for i, label in enumerate(labels)}
    return data


def save_pretrained(directory, params, config: ModelConfig, *, tokenizer=None, architecture=None,
                    labels=None) -> str:
    """Write ``params`` (minispanbert names) as a Hugging Face folder ``directory``: config.json,
    model.safetensors and, given a tokenizer, its files; each file atomically. The architecture is
    inferred from the heads present unless given. Returns the architecture written."""
    if getattr(config, "model_type", "bert") != "bert":
        raise ValueError(f"only BERT-architecture models can be saved as Hugging Face BERT folders, this one is "
                         f"model_type {config.model_type!r}; export a SpanBERT or BERT run")
    architecture = architecture or infer_architecture(params)
    if architecture not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {architecture!r}: choose one of {', '.join(ARCHITECTURES)}")
    heads = ARCHITECTURES[architecture]
    num_labels = len(labels) if labels is not None else (
        int(params[CLASSIFIER + "weight"].shape[0]) if CLASSIFIER + "weight" in params else 2)
    shapes = expected_shapes(config, heads + heads_present(params), num_labels)
    missing = [name for name in shapes if name not in params]
    if missing:
        raise ValueError(f"{architecture} needs {len(missing)} tensors these parameters lack (e.g. {missing[0]!r}); "
                         "pass the parameters of a model with that head")
    for name, shape in shapes.items():
        if tuple(params[name].shape) != shape:
            raise ValueError(f"parameter {name!r} has shape {tuple(params[name].shape)} but the config implies "
                             f"{shape}: save the config the parameters were made with")
    if architecture in ("BertForSequenceClassification", "BertForTokenClassification") and labels is None:
        labels = [f"LABEL_{i}" for i in range(num_labels)]
    strip = architecture == "BertModel"  # transformers writes BertModel's own tensors without "bert."
    tensors = {(name[len(PREFIX):] if strip and name.startswith(PREFIX) else name): value
               for name, value in params.items()}
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise ValueError(f"{directory} is a file: choose a folder to save the model into")
    save_params(directory / WEIGHTS_FILE, tensors)
    pad_id = special_token_ids(tokenizer)["pad"] if tokenizer is not None else 0
    hf_config = hf_config_dict(config, architecture, pad_token_id=pad_id, labels=labels)
    if tokenizer is not None:  # transformers keeps unknown keys; load_pretrained checks the tokenizer against it
        hf_config[HF_VOCAB_KEY] = vocab_fingerprint(tokenizer)
    config_text = json.dumps(hf_config, indent=2)
    write_text_atomic(directory / CONFIG_FILE, config_text + "\n")
    if tokenizer is not None:
        save_bert_tokenizer(tokenizer, directory, model_max_length=config.max_position_embeddings)
    return architecture
