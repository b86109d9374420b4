"""Answer SQuAD v1.1 questions with a SQuAD-fine-tuned BERT / SpanBERT checkpoint on minispanbert's
NumPy engine, and score the answers with the official metric.

    python -m minispanbert.predict_qa --model MODEL_DIR --data dev-v1.1.json --out predictions.json
    {"exact_match": ..., "f1": ...}

``--model`` is a Hugging Face folder with a ``qa_outputs`` head (BertForQuestionAnswering, e.g. a
SpanBERT SQuAD fine-tune, or a minispanbert model saved with `interop.huggingface.save_pretrained`;
see `minispanbert.interop.huggingface`). The pipeline is minispanbert's own, the same as
``finetune_qa`` evaluates with: windows ``[CLS] question [SEP] passage [SEP]``
(`squad.make_features`, the tokenizer's own special ids), start / end logits (`model.qa_head`),
n-best decoding with maximal context (`squad.decode_predictions`), official EM / F1
(`squad.evaluate`). BERT's and SpanBERT's SQuAD scripts use max_seq_len 384 / doc_stride 128 /
max_query_len 64, the defaults here.

Batched inference: windows are sorted by length and each batch is cut to its longest window (the
attention mask makes the padded columns irrelevant, so the logits of real positions are unchanged;
cut positions get -inf, and decoding never looks outside the passage). A progress bar and a
throughput line (real tokens/s and questions/s) go to stderr; the scores are one JSON line on stdout.
``--out`` (optional) receives the predictions ``{question id: answer}`` in the official format.
"""
from __future__ import annotations

import json
import sys
import time

import numpy as np

from minispanbert.backend import BACKENDS, get_backend, synchronize, to_numpy
from minispanbert.engine import kernels
from minispanbert.engine.cli import Parser
from minispanbert.engine.runs.atomic import check_output_file, describe_os_error
from minispanbert.finetune.qa_head import qa_forward
from minispanbert.finetune.squad import (
    decode_predictions,
    evaluate,
    features_to_arrays,
    make_features,
    read_squad,
    write_predictions,
)
from minispanbert.interop.huggingface import load_pretrained


def qa_logits(model, arrays, *, xp, batch_size: int, log=print):
    """Start and end logits (N, T) on the host for every window, shortest windows batched together;
    positions past a batch's longest window are -inf. Logs the throughput through ``log``."""
    lengths = arrays["attention_mask"].sum(axis=1)
    order = np.argsort(lengths, kind="stable")
    N, T = arrays["input_ids"].shape
    starts = np.full((N, T), -np.inf, dtype=np.float64)
    ends = np.full((N, T), -np.inf, dtype=np.float64)
    from tqdm.auto import tqdm

    t0 = time.perf_counter()
    for first in tqdm(range(0, N, batch_size), desc="predict QA", unit="batch", disable=None, file=sys.stderr):
        rows = order[first:first + batch_size]
        width = int(lengths[rows].max())
        batch = {name: arrays[name][rows, :width] for name in ("input_ids", "token_type_ids", "attention_mask")}
        out, _ = qa_forward(model.params, batch, model.config, xp=xp, train=False)
        starts[rows, :width] = to_numpy(out.start_logits)
        ends[rows, :width] = to_numpy(out.end_logits)
    synchronize(xp)
    seconds = time.perf_counter() - t0
    tokens = int(lengths.sum())
    log(f"throughput: {tokens} tokens ({N} windows) in {seconds:.1f} s = {tokens / seconds:.0f} tokens/s, "
        f"batch {batch_size}, {model.params['qa_outputs.weight'].dtype}")
    return starts, ends


def predict(model, examples, *, xp, batch_size=32, max_seq_len=384, doc_stride=128, max_query_len=64, n_best=20,
            max_answer_len=30, log=print) -> dict[str, str]:
    """{question id: answer text} for ``examples`` (SquadExamples) with a loaded QA model."""
    if "qa" not in model.heads:
        raise ValueError(f"{model.source} has no question-answering head (qa_outputs.*; it is {model.architecture}): "
                         "pass a SQuAD fine-tuned checkpoint (BertForQuestionAnswering)")
    if model.tokenizer is None:
        raise ValueError(f"{model.source} has no vocab.txt or tokenizer.json: copy the tokenizer files of the "
                         "model it was fine-tuned from into the folder")
    if max_seq_len > model.config.max_position_embeddings:
        raise ValueError(f"--max-seq-len {max_seq_len} exceeds the model's max_position_embeddings "
                         f"{model.config.max_position_embeddings}: lower it")
    features = make_features(examples, model.tokenizer, max_seq_len=max_seq_len, doc_stride=doc_stride,
                             max_query_len=max_query_len, training=False)
    if not features:
        return {example.qid: "" for example in examples}
    start_time = time.perf_counter()
    starts, ends = qa_logits(model, features_to_arrays(features), xp=xp, batch_size=batch_size, log=log)
    predictions = decode_predictions(examples, features, starts, ends, n_best=n_best, max_answer_len=max_answer_len)
    seconds = time.perf_counter() - start_time
    log(f"answered {len(examples)} questions in {seconds:.1f} s ({len(examples) / seconds:.1f} questions/s)")
    return predictions


def main(argv=None) -> dict:
    p = Parser("python -m minispanbert.predict_qa", __doc__)
    p.add_argument("--model", required=True, help="Hugging Face QA model folder (or hub id, downloaded if possible)")
    p.add_argument("--data", required=True, help="SQuAD v1.1 JSON file (e.g. dev-v1.1.json)")
    p.add_argument("--out", default=None, help="write the predictions {id: answer} here (official format)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-seq-len", type=int, default=384)
    p.add_argument("--doc-stride", type=int, default=128)
    p.add_argument("--max-query-len", type=int, default=64)
    p.add_argument("--n-best", type=int, default=20)
    p.add_argument("--max-answer-len", type=int, default=30, help="in tokens")
    p.add_argument("--max-examples", type=int, default=None, help="answer only the first N questions")
    p.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    p.add_argument("--backend", choices=BACKENDS, default="numpy")
    args = p.parse_args(argv)
    log = lambda line: print(line, file=sys.stderr)  # noqa: E731
    try:
        for name in ("batch_size", "max_seq_len", "doc_stride", "max_query_len", "n_best", "max_answer_len"):
            if getattr(args, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
        if args.max_examples is not None and args.max_examples < 1:
            raise ValueError(f"--max-examples must be at least 1, got {args.max_examples}")
        if args.out is not None:
            check_output_file(args.out)  # before the work, not after it
        examples = read_squad(args.data)[:args.max_examples]
        xp = get_backend(args.backend)
        model = load_pretrained(args.model, xp=xp, dtype=args.dtype)
        log(f"model: {model.architecture} from {model.source}, {model.config.num_hidden_layers} layers, "
            f"H={model.config.hidden_size}, {args.dtype}")
        with kernels.installed():
            predictions = predict(model, examples, xp=xp, batch_size=args.batch_size, max_seq_len=args.max_seq_len,
                                  doc_stride=args.doc_stride, max_query_len=args.max_query_len, n_best=args.n_best,
                                  max_answer_len=args.max_answer_len, log=log)
        if args.out is not None:
            try:
                write_predictions(predictions, args.out)
            except OSError as exc:  # a full disk: the predictions are lost, say so in one line
                raise ValueError(describe_os_error(exc, f"cannot write {args.out}")) from None
        scores = evaluate(examples, predictions)
    except ValueError as exc:
        sys.exit(f"error: {exc}")
    print(json.dumps({key: round(value, 2) for key, value in scores.items()}))
    return scores


if __name__ == "__main__":
    main()
