"""The one entry point for a pretrained encoder to fine-tune: ``load_pretrained_encoder(path, *, xp,
dtype)`` reads either a minispanbert checkpoint (a ``python -m minispanbert.train --out DIR`` run
folder, its latest checkpoint, or one of its ``checkpoints/step-*`` folders, each holding the
weights and tokenizer.json) or a Hugging Face BERT folder or hub id
(config.json + weights + vocab, through `interop.huggingface.load_pretrained`), and returns the
weights, the model config and the tokenizer. Every problem is one ValueError line naming the file.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from minispanbert.config import ModelConfig
from minispanbert.data import load_tokenizer
from minispanbert.engine.runs.checkpoint import CHECKPOINTS_DIR, TRAINER_STATE_FILE, check_vocab, load_checkpoint

TOKENIZER_FILE = "tokenizer.json"
HF_CONFIG_FILE = "config.json"


@dataclass
class PretrainedEncoder:
    """``params`` on the backend in ``dtype`` (Hugging Face names; heads included, the task model
    takes what it needs via `model.pretrained_weights.load_encoder_weights`), ``config``,
    ``tokenizer`` (a ``tokenizers.Tokenizer``), and ``description`` for the log."""
    params: dict
    config: ModelConfig
    tokenizer: object
    description: str


def load_pretrained_encoder(path, *, xp, dtype="float32") -> PretrainedEncoder:
    """A minispanbert pretraining (or fine-tuning) folder, or a Hugging Face BERT folder."""
    from minispanbert.interop.huggingface import load_pretrained, looks_like_hub_id, resolve_model_path

    directory = Path(path)
    if not directory.is_dir():
        if not looks_like_hub_id(path):
            raise ValueError(f"checkpoint folder {directory} does not exist: pass the --out folder of a "
                             "python -m minispanbert.train run, a Hugging Face BERT folder or a hub id")
        directory = resolve_model_path(path)  # downloaded, or one line naming the download command
    if (directory / HF_CONFIG_FILE).is_file() and not (directory / CHECKPOINTS_DIR).is_dir() \
            and not (directory / TRAINER_STATE_FILE).is_file():
        model = load_pretrained(directory, xp=xp, dtype=dtype)
        if model.tokenizer is None:
            raise ValueError(f"{directory} has no vocab.txt or tokenizer.json: add the model's tokenizer files")
        return PretrainedEncoder(model.params, model.config, model.tokenizer,
                                 f"Hugging Face {model.architecture} from {directory}")
    checkpoint = load_checkpoint(directory, xp=xp)
    folder = checkpoint.directory
    if "model" not in checkpoint.config:
        raise ValueError(f"{folder}: trainer_state.json has no model config; pass a minispanbert checkpoint")
    config = ModelConfig.from_dict(checkpoint.config["model"])
    if not (folder / TOKENIZER_FILE).is_file():
        raise ValueError(f"{folder / TOKENIZER_FILE} is missing: the weights only fit the tokenizer they were "
                         "pretrained with, so pass a complete checkpoint folder (do not train a new tokenizer)")
    try:
        if config.model_type == "roberta":  # byte-level BPE with RoBERTa's special tokens
            from minispanbert.family.bpe_tokenizer import load_bpe_tokenizer

            tokenizer = load_bpe_tokenizer(folder / TOKENIZER_FILE)
        else:
            tokenizer = load_tokenizer(folder / TOKENIZER_FILE)
    except ValueError:
        raise ValueError(f"{folder / TOKENIZER_FILE} is corrupt: the weights only fit the tokenizer they were "
                         "pretrained with, so pass another checkpoint folder (do not train a new tokenizer)") from None
    check_vocab(checkpoint.extra, tokenizer, folder / TOKENIZER_FILE)
    if tokenizer.get_vocab_size() > config.vocab_size:
        raise ValueError(f"{folder / TOKENIZER_FILE} has {tokenizer.get_vocab_size()} tokens but the model only "
                         f"{config.vocab_size}: the tokenizer belongs to another checkpoint")
    params = {name: value.astype(dtype) for name, value in checkpoint.params.items()}
    return PretrainedEncoder(params, config, tokenizer, f"{folder} (step {checkpoint.step})")
