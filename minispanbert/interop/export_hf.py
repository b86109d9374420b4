"""Write a minispanbert model as a Hugging Face folder that ``transformers`` opens.

    python -m minispanbert.export_hf --checkpoint runs/spanbert --out hf/spanbert-tiny     # pretraining run
    python -m minispanbert.export_hf --checkpoint runs/qa --out hf/qa-tiny                 # finetune_qa run
    python -m minispanbert.export_hf --random-init base --head qa --tokenizer runs/spanbert \\
        --out hf/random-base-qa                                                            # for timing

The folder holds config.json (with "architectures"), model.safetensors and the tokenizer files
(`interop.huggingface.save_pretrained`); ``transformers.AutoModelFor*.from_pretrained(folder)``
and ``AutoTokenizer.from_pretrained(folder)`` open it. A pretraining run becomes BertForMaskedLM:
its SBO head (``cls.sbo.*``) has no Hugging Face class, so transformers lists exactly those tensors
as unexpected and ignores them. A QA run becomes BertForQuestionAnswering, an SST-2 or WNUT-17
run BertForSequenceClassification or BertForTokenClassification with the task's label names
(id2label), a ``--objective bert`` run BertForPreTraining, ``roberta`` RobertaForMaskedLM and
``albert`` AlbertForPreTraining
(`interop.family`); an ``electra`` run wrote its two folders when it finished (RUN/hf).

``--random-init PRESET`` writes a freshly initialised model of a named preset (vocabulary from
``--tokenizer``: a tokenizer.json, a minispanbert run folder or a Hugging Face folder): its speed is that of a
trained model of the same size, which is how the README's base-size throughput is measured.
The weights are written in ``--dtype`` (float32, what Hugging Face checkpoints hold, even after a
float64 run). A folder that is already a Hugging Face model needs no export and is refused.
The folder is written as a hidden sibling ``.OUT.new.XXXX`` and moved to ``--out`` in one step once
complete, so a crash leaves the old ``--out`` (or none), never a half-written one. An ``--out`` that
already holds files is replaced only with ``--overwrite``, and never when it is or holds a run folder.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from minispanbert.config import PRESETS, ModelConfig, preset
from minispanbert.engine.cli import Parser
from minispanbert.engine.runs.atomic import describe_os_error, staged_folder
from minispanbert.engine.runs.checkpoint import (
    CHECKPOINTS_DIR,
    MODEL_FILE,
    TRAINER_STATE_FILE,
    check_vocab,
    load_checkpoint,
    resolve_checkpoint,
)
from minispanbert.engine.trainer import TOKENIZER_FILE
from minispanbert.finetune import sst2, wnut17
from minispanbert.finetune.qa_head import init_qa_params
from minispanbert.interop.family import ARCHITECTURES as FAMILY_ARCHITECTURES
from minispanbert.interop.family import save_family_pretrained
from minispanbert.interop.huggingface import CONFIG_FILE, save_pretrained
from minispanbert.interop.tokenizer import load_bert_tokenizer, read_tokenizer_json
from minispanbert.model.spanbert_loss import init_pretraining_params

HEADS = {"mlm": init_pretraining_params, "qa": init_qa_params}
LABEL_NAMES = {"sst2": sst2.LABELS, "wnut17": wnut17.TAGS}  # a fine-tuning run's task -> id2label


def read_tokenizer(path: Path):
    """A tokenizer.json file (minispanbert's or a Hugging Face vocabulary's special ids), the
    tokenizer of a minispanbert run folder (its latest checkpoint's), or that of a Hugging Face folder."""
    if (path / CHECKPOINTS_DIR).is_dir():
        return read_tokenizer_json(resolve_checkpoint(path) / TOKENIZER_FILE)
    if path.is_dir():
        tok = load_bert_tokenizer(path)
        if tok is None:
            raise ValueError(f"{path} holds no vocab.txt or tokenizer.json: pass a tokenizer file or model folder")
        return tok
    return read_tokenizer_json(path)


def export(args) -> str:
    """Validate the arguments, then write the folder ``--out`` through a hidden staging sibling so it
    appears complete or not at all (an existing ``--out`` is replaced only with ``--overwrite``)."""
    out = Path(args.out)
    if (out / TRAINER_STATE_FILE).exists() or (out / CHECKPOINTS_DIR).exists():
        raise ValueError(f"{out} is a minispanbert run folder, never replaced by an export: choose another --out")
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file, not a folder: choose another --out")
    if out.is_dir() and any(out.iterdir()) and not args.overwrite:
        raise ValueError(f"--out {out} already holds files: choose another --out, or pass --overwrite to replace "
                         "that folder (it is swapped for the new one only once the export is complete)")
    if args.random_init is not None:
        if args.tokenizer is None:
            raise ValueError("--random-init needs --tokenizer (a tokenizer.json or a Hugging Face model folder)")
        tok = read_tokenizer(Path(args.tokenizer))
        config = preset(args.random_init).replace(vocab_size=tok.get_vocab_size())
        params = HEADS[args.head](config, args.seed, xp=np, dtype=args.dtype)
        return write_folder(out, lambda folder: save_pretrained(folder, params, config, tokenizer=tok))
    run = Path(args.checkpoint)
    if (run / CONFIG_FILE).is_file() and not (run / TRAINER_STATE_FILE).exists() \
            and not (run / CHECKPOINTS_DIR).exists():
        raise ValueError(f"{run} is already a Hugging Face model folder ({CONFIG_FILE} + weights): no export is "
                         "needed; pass it as it is to from_pretrained, fill_mask --model or finetune --checkpoint")
    if run.resolve() == out.resolve() or out.resolve() in run.resolve().parents:
        raise ValueError(f"--out {out} holds the --checkpoint folder: choose an --out outside {run}")
    checkpoint = load_checkpoint(run, xp=np)
    if "model" not in checkpoint.config:
        raise ValueError(f"{run / TRAINER_STATE_FILE} has no model config: pass a minispanbert run folder")
    folder = checkpoint.directory or run  # the step folder holds the run's tokenizer.json
    config = ModelConfig.from_dict(checkpoint.config["model"])
    params = {name: value.astype(args.dtype) for name, value in checkpoint.params.items()}
    if config.model_type == "electra":
        raise ValueError(f"{run} is an ELECTRA run: its two networks were exported when it finished, to "
                         f"{run / 'hf'}/discriminator and {run / 'hf'}/generator")
    tokenizer_path = Path(args.tokenizer) if args.tokenizer else folder / TOKENIZER_FILE
    tok = read_tokenizer(tokenizer_path)
    check_vocab(checkpoint.extra, tok, tokenizer_path)  # weights fit only the vocabulary they were trained with
    if config.model_type in FAMILY_ARCHITECTURES:  # --objective roberta | albert
        return write_folder(out, lambda folder: save_family_pretrained(folder, params, config, tokenizer=tok))
    labels = LABEL_NAMES.get(checkpoint.config.get("finetune", {}).get("task"))
    return write_folder(out, lambda folder: save_pretrained(folder, params, config, tokenizer=tok, labels=labels))


def write_folder(out: Path, write) -> str:
    """``write(folder)`` into a staging sibling of ``out``, then put it at ``out`` in one step."""
    try:
        with staged_folder(out) as staging:
            return write(staging)
    except OSError as exc:
        raise ValueError(describe_os_error(exc, f"cannot write {out}")) from None


def main(argv=None) -> str:
    p = Parser("python -m minispanbert.export_hf", __doc__)
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", help="a minispanbert run folder (train or finetune_qa --out)")
    source.add_argument("--random-init", choices=list(PRESETS), help="a freshly initialised model of this preset")
    p.add_argument("--out", required=True, help="the Hugging Face folder to write")
    p.add_argument("--head", choices=list(HEADS), default="mlm", help="with --random-init: MLM+SBO or QA head")
    p.add_argument("--tokenizer", default=None,
                   help="tokenizer.json, a minispanbert run folder or a Hugging Face folder (default: the run's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dtype", choices=["float32", "float64"], default="float32", help="of the written weights")
    p.add_argument("--overwrite", action="store_true",
                   help="replace --out if it already holds files (once the new folder is complete)")
    args = p.parse_args(argv)
    try:
        architecture = export(args)
    except ValueError as exc:
        sys.exit(f"error: {exc}")
    print(f"wrote {architecture} to {args.out} (config.json, {MODEL_FILE}, tokenizer files)")
    return architecture


if __name__ == "__main__":
    main()
