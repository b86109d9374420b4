"""The SST-2 fine-tuning loop of ``python -m minispanbert.finetune sst2`` run in PyTorch: the yardstick
for the README's real-BERT results. Same flags, same everything but the network's code:

    python benchmarks/torch_finetune.py --checkpoint FOLDER --train train.tsv --dev dev.tsv ...

What is shared with the NumPy run: the tokenizer and the encoded rows (`finetune.sst2`), the starting
weights (`finetune.loop.model_setup`: the folder's encoder and pooler and the head drawn from
``--seed``, or a random encoder with ``--random-init``), the batch order (`batch_indices`, trimmed
batches), the schedule (`optim.linear_warmup_decay`), weight decay except on biases and LayerNorm
(`optim.no_decay_mask`), clipping at ``--max-grad-norm``. What PyTorch brings: transformers'
``BertForSequenceClassification`` (SDPA attention), autograd, ``torch.optim.AdamW`` (fused where the
build supports it) with betas (0.9, 0.999) and eps 1e-8, and its own dropout masks (so the two runs
agree in distribution, not bit for bit). ``--threads`` sets ``torch.set_num_threads``.

It lives outside the package on purpose: minispanbert is hand-written and never imports an autograd
framework; torch and transformers are optional yardsticks (``pip install torch==2.13.0 transformers``).
"""
from __future__ import annotations

import json
import sys
import time

import numpy as np

from minispanbert.finetune.classification_metrics import classification_scores
from minispanbert.finetune.loop import FinetuneConfig, batch_indices, build_parser, default_lr, model_setup
from minispanbert.finetune.recipes import TASKS, take
from minispanbert.optim import linear_warmup_decay, no_decay_mask


def torch_model(params, model_config, cfg: FinetuneConfig, torch, transformers):
    """transformers' BertForSequenceClassification holding exactly ``params`` (Hugging Face names)."""
    p = model_config.hidden_dropout_prob if cfg.dropout is None else cfg.dropout
    hf_config = transformers.BertConfig(
        vocab_size=model_config.vocab_size, hidden_size=model_config.hidden_size,
        num_hidden_layers=model_config.num_hidden_layers, num_attention_heads=model_config.num_attention_heads,
        intermediate_size=model_config.intermediate_size, hidden_act=model_config.hidden_act,
        max_position_embeddings=model_config.max_position_embeddings, type_vocab_size=model_config.type_vocab_size,
        layer_norm_eps=model_config.layer_norm_eps, hidden_dropout_prob=p, attention_probs_dropout_prob=p,
        num_labels=2, attn_implementation="sdpa")
    model = transformers.BertForSequenceClassification(hf_config)
    missing, unexpected = model.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in params.items()},
                                                strict=False)
    if missing or unexpected:
        raise ValueError(f"the starting weights do not fit BertForSequenceClassification (missing {missing[:3]}, "
                         f"unexpected {unexpected[:3]})")
    return model


def run(cfg: FinetuneConfig, log=print) -> dict:
    import torch
    import transformers

    task = TASKS["sst2"]
    torch.manual_seed(cfg.seed)
    torch.set_num_threads(cfg.threads or 1)
    params, model_config, tokenizer, init, _ = model_setup(cfg, np)
    lr_peak = cfg.lr or default_lr(model_config)
    data = task.load(cfg, tokenizer)
    model = torch_model(params, model_config, cfg, torch, transformers)
    decay = no_decay_mask(params)
    named = dict(model.named_parameters())
    groups = [{"params": [named[n] for n in params if decay[n]], "weight_decay": cfg.weight_decay},
              {"params": [named[n] for n in params if not decay[n]], "weight_decay": 0.0}]
    try:
        optimizer = torch.optim.AdamW(groups, lr=lr_peak, betas=(0.9, 0.999), eps=1e-8, fused=True)
    except (RuntimeError, TypeError):  # a build without the fused CPU kernel
        optimizer = torch.optim.AdamW(groups, lr=lr_peak, betas=(0.9, 0.999), eps=1e-8)
    n_train = len(data.train_arrays["input_ids"])
    total = cfg.steps or cfg.epochs * -(-n_train // cfg.batch_size)
    warmup = round(cfg.warmup_fraction * total)
    log(f"PyTorch {torch.__version__}, {cfg.threads or 1} threads; init: {init}; {total} steps of {cfg.batch_size}, "
        f"peak lr {lr_peak:g}")
    as_tensors = lambda batch: {k: torch.from_numpy(v) for k, v in batch.items()}  # noqa: E731
    model.train()
    losses, started = [], time.perf_counter()
    for step in range(total):
        batch = as_tensors(take(data.train_arrays, batch_indices(step, n_train, cfg), trim=True))
        for group in optimizer.param_groups:
            group["lr"] = linear_warmup_decay(step, peak_lr=lr_peak, warmup_steps=warmup, total_steps=total)
        loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
        if (step + 1) % max(1, total // 10) == 0:
            log(f"step {step + 1}/{total}: train loss {np.mean(losses[-max(1, total // 10):]):.3f} | "
                f"{(time.perf_counter() - started) / (step + 1):.3f} s/step")
    train_seconds = time.perf_counter() - started
    model.eval()
    dev = data.evals[0]
    inputs = {k: v for k, v in dev.arrays.items() if k != "labels"}
    with torch.no_grad():
        logits = np.concatenate([model(**as_tensors(take(inputs, slice(first, first + cfg.batch_size), trim=True)))
                                 .logits.numpy() for first in range(0, dev.size, cfg.batch_size)])
    scores = classification_scores(dev.arrays["labels"], logits.argmax(axis=1), num_labels=2)
    log(f"trained {total} steps in {train_seconds:.0f} s ({train_seconds / total:.3f} s/step)")
    log(f"dev: {json.dumps({k: scores[k] for k in ('accuracy', 'precision', 'recall', 'f1')})}")
    return {"scores": {"dev": scores}, "train_losses": losses, "seconds_per_step": train_seconds / total}


def main(argv=None) -> dict:
    parser = build_parser(prog="python benchmarks/torch_finetune.py", tasks=("sst2",))
    parser.description = __doc__  # this script's, not the NumPy loop's
    args = vars(parser.parse_args(argv))
    cfg = FinetuneConfig(task="sst2", **{k: v for k, v in args.items() if k != "task"})
    try:
        cfg.validate()
        return run(cfg)
    except ValueError as exc:
        sys.exit(f"error: {exc}")


if __name__ == "__main__":
    main()
