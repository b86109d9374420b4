"""Fill in [MASK] with a real pretrained BERT running on minispanbert's NumPy engine.

    python -m minispanbert.fill_mask --model bert-base-cased "The capital of France is [MASK]."
    The capital of France is [MASK].
      [MASK] 1:  Paris       0.6791
               2:  ...

``--model`` is a Hugging Face folder (config.json + model.safetensors + vocab.txt / tokenizer.json,
see `minispanbert.interop.huggingface`) whose weights include the MLM head (``cls.predictions``:
BertForMaskedLM or BertForPreTraining checkpoints, or a minispanbert model saved with
`interop.huggingface.save_pretrained`). SpanBERT's released checkpoints carry no MLM head, so they
are refused with one line. Each text is encoded as ``[CLS] text [SEP]``; the MLM logits are computed
at the [MASK] positions only and softmaxed over the vocabulary (probabilities, as
``transformers.pipeline("fill-mask")``). Texts run in batches of ``--batch-size`` (padded, with an
attention mask); a progress bar and a throughput line (tokens/s) go to stderr.
"""
from __future__ import annotations

import sys
import time

import numpy as np

from minispanbert.backend import BACKENDS, get_backend, synchronize, to_numpy
from minispanbert.engine import kernels
from minispanbert.engine.cli import Parser
from minispanbert.interop.heads import bert_outputs
from minispanbert.interop.huggingface import load_pretrained
from minispanbert.interop.tokenizer import special_token_ids
from minispanbert.layers import softmax


def encode_texts(tokenizer, texts, max_len: int) -> list[np.ndarray]:
    """Each text -> ids ``[CLS] text [SEP]`` (int64); one-line ValueError for a text without [MASK]
    or longer than the model's positions."""
    ids = special_token_ids(tokenizer)
    if ids["mask"] is None:
        raise ValueError("the tokenizer has no [MASK] token: pass a BERT model folder")
    out = []
    for text in texts:
        pieces = tokenizer.encode(text, add_special_tokens=False).ids
        row = np.array([ids["cls"], *pieces, ids["sep"]], dtype=np.int64)
        if not (row == ids["mask"]).any():
            raise ValueError(f"no [MASK] in {text!r}: write [MASK] where the model should fill in a token")
        if len(row) > max_len:
            raise ValueError(f"{text[:40]!r}... is {len(row)} tokens with [CLS]/[SEP], more than the model's "
                             f"{max_len} positions: shorten it")
        out.append(row)
    return out


def token_text(tokenizer, token_id: int) -> str:
    """The vocabulary entry of ``token_id``, or "<id N>" for a row of the model's embedding table
    beyond the tokenizer's vocabulary (a minispanbert preset's V can exceed a trained vocabulary)."""
    token = tokenizer.id_to_token(token_id)
    return f"<id {token_id}>" if token is None else token


def pad_batch(rows, pad_id: int):
    """Rows of ids -> (input_ids, token_type_ids, attention_mask) (B, T_max) int64."""
    T = max(len(r) for r in rows)
    input_ids = np.full((len(rows), T), pad_id, dtype=np.int64)
    attention_mask = np.zeros((len(rows), T), dtype=np.int64)
    for i, row in enumerate(rows):
        input_ids[i, :len(row)] = row
        attention_mask[i, :len(row)] = 1
    return input_ids, np.zeros_like(input_ids), attention_mask


def fill_mask(model, texts, *, xp, top_k: int = 5, batch_size: int = 8, log=print):
    """For each text, for each [MASK] in it: the ``top_k`` (token, probability) pairs, best first.
    Logs the throughput (real tokens per second of forward passes) through ``log``."""
    if "mlm" not in model.heads:
        raise ValueError(f"{model.source} has no MLM head (no cls.predictions.* tensors; {model.architecture}, heads "
                         f"{list(model.heads) or 'none'}), so it cannot fill in [MASK]: pass a BertForMaskedLM or "
                         "BertForPreTraining checkpoint such as google-bert/bert-base-cased")
    if model.tokenizer is None:
        raise ValueError(f"{model.source} has no vocab.txt or tokenizer.json: copy the tokenizer files of the "
                         "model it was trained from into the folder")
    ids = special_token_ids(model.tokenizer)
    rows = encode_texts(model.tokenizer, texts, model.config.max_position_embeddings)
    from tqdm.auto import tqdm

    results, tokens, start = [], 0, time.perf_counter()
    for first in tqdm(range(0, len(rows), batch_size), desc="fill-mask", unit="batch", disable=None, file=sys.stderr):
        input_ids, token_type_ids, attention_mask = pad_batch(rows[first:first + batch_size], ids["pad"])
        positions = np.flatnonzero(input_ids.reshape(-1) == ids["mask"])
        out = bert_outputs(model, input_ids, token_type_ids, attention_mask, xp=xp, mlm_positions=positions)
        probs, _ = softmax.softmax_forward(out["logits"], xp=xp)
        probs = to_numpy(probs)
        tokens += int(attention_mask.sum())
        top = np.argsort(-probs, axis=1, kind="stable")[:, :top_k]
        rows_of = positions // input_ids.shape[1]
        for b in range(input_ids.shape[0]):
            results.append([[(token_text(model.tokenizer, int(t)), float(probs[n, t])) for t in top[n]]
                            for n in np.flatnonzero(rows_of == b)])
    synchronize(xp)
    seconds = time.perf_counter() - start
    log(f"throughput: {tokens} tokens in {seconds:.2f} s = {tokens / seconds:.0f} tokens/s "
        f"({len(rows)} texts, batch {batch_size}, {model.params[next(iter(model.params))].dtype})")
    return results


def main(argv=None):
    parser = Parser("python -m minispanbert.fill_mask", __doc__)
    parser.add_argument("texts", nargs="+", help="text(s) with one or more [MASK]")
    parser.add_argument("--model", required=True, help="Hugging Face model folder (or hub id, downloaded if possible)")
    parser.add_argument("--top-k", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    parser.add_argument("--backend", choices=BACKENDS, default="numpy")
    args = parser.parse_args(argv)
    try:
        if args.top_k < 1 or args.batch_size < 1:
            raise ValueError("--top-k and --batch-size must be at least 1")
        xp = get_backend(args.backend)
        model = load_pretrained(args.model, xp=xp, dtype=args.dtype)
        with kernels.installed():
            results = fill_mask(model, args.texts, xp=xp, top_k=args.top_k, batch_size=args.batch_size,
                                log=lambda line: print(line, file=sys.stderr))
    except ValueError as exc:
        sys.exit(f"error: {exc}")
    for text, masks in zip(args.texts, results):
        print(text)
        for m, candidates in enumerate(masks, 1):
            for rank, (token, prob) in enumerate(candidates, 1):
                label = f"[MASK] {m}" if rank == 1 else ""
                print(f"  {label:>9} {rank}. {token:<16} {prob:.4f}")
    return results


if __name__ == "__main__":
    main()
