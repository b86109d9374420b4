"""What each task hands the shared fine-tuning loop (`minispanbert.finetune`): its data, its model
(parameters, forward, backward) and its official evaluation.

    squad    SQuAD v1.1 extractive QA   encoder + qa_outputs span head      exact match / F1 (official script)
    sst2     GLUE SST-2 sentiment       encoder + pooler + classifier        accuracy (+ P / R / F1, confusion)
    wnut17   WNUT-17 named entities     encoder + per-token classifier       conlleval entity F1 (+ surface form)

A task's ``load`` returns the training arrays and a list of evaluation sets (label, arrays, and
what its ``evaluate`` needs to score predictions against the file's own gold answers); ``evaluate``
writes the predictions into the output folder in the task's usual format and returns the scores.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from minispanbert.backend import to_numpy
from minispanbert.engine.parallel.threads import map_threads
from minispanbert.engine.runs.atomic import write_text_atomic
from minispanbert.finetune import sst2, wnut17
from minispanbert.finetune.classification_metrics import classification_scores
from minispanbert.finetune.conlleval import ner_scores
from minispanbert.finetune.qa_head import init_qa_params, position_labels, qa_backward, qa_forward
from minispanbert.finetune.sequence_classification import (
    init_sequence_classification_params,
    sequence_classification_backward,
    sequence_classification_forward,
)
from minispanbert.finetune.squad import (
    answers_with_valid_offsets,
    decode_predictions,
    evaluate,
    examples_to_squad,
    features_to_arrays,
    make_features,
    read_squad,
    split_by_article,
    write_predictions,
)
from minispanbert.finetune.token_classification import (
    init_token_classification_params,
    token_classification_backward,
    token_classification_forward,
)
from minispanbert.layers.cross_entropy import IGNORE_INDEX


@dataclass
class EvalSet:
    """``label`` ("dev", "test", "dev split"), host ``arrays``, the examples they came from
    (``payload``: task-specific) and how many examples there are."""
    label: str
    arrays: dict
    payload: object
    size: int


@dataclass
class TaskData:
    train_arrays: dict
    evals: list[EvalSet]
    notes: list[str] = field(default_factory=list)  # lines for the log


def take(arrays: dict, indices, *, trim: bool) -> dict:
    """Rows ``indices`` of every array; with ``trim`` the (B, T) arrays lose the columns past the
    longest real row (padding only: attention masks it out, and these tasks' losses ignore it)."""
    batch = {name: value[indices] for name, value in arrays.items()}
    if trim:
        length = int(batch["attention_mask"].sum(axis=1).max())
        T = batch["attention_mask"].shape[1]
        batch = {name: value[:, :length] if value.ndim == 2 and value.shape[1] == T else value
                 for name, value in batch.items()}
    return batch


def predict(task, params, arrays, model_config, *, xp, batch_size, threads: int = 1) -> list[np.ndarray]:
    """Dropout-off forward over every row in batches -> host logits (for QA: start, end). ``threads``
    > 1 (NumPy): the batches run on that many threads (:func:`backend.map_threads`), in order."""
    inputs = {k: v for k, v in arrays.items() if k not in task.label_keys}

    def logits(first):
        out, _ = task.forward(params, take(inputs, slice(first, first + batch_size), trim=False), model_config,
                              xp=xp, train=False)
        return task.logits_of(out)

    firsts = range(0, len(arrays["input_ids"]), batch_size)
    outputs = map_threads(logits, firsts) if threads > 1 else [logits(first) for first in firsts]
    return [np.concatenate(part) for part in zip(*outputs)]


def _file_label(label: str) -> str:
    return label.replace(" ", "-")


# --------------------------------------------------------------------------- SQuAD


def _squad_load(cfg, tokenizer) -> TaskData:
    if cfg.split_dev_by_article is not None:
        train_examples, eval_examples = split_by_article(read_squad(cfg.dev), cfg.split_dev_by_article, cfg.seed)
        notes = [f"data: {cfg.dev} split by article: {len({e.title for e in train_examples})} articles for training, "
                 f"{len({e.title for e in eval_examples})} held out"]
        label = "dev split"
    else:
        train_examples, eval_examples = read_squad(cfg.train), read_squad(cfg.dev)
        notes, label = [f"data: train {cfg.train}, evaluate on {cfg.dev}"], "dev"
    train_examples, dropped = answers_with_valid_offsets(train_examples)
    if not train_examples:
        raise ValueError(f"no training question is usable: all {dropped} answers have an answer_start that does not "
                         "point at their text; fix the offsets (context[answer_start:][:len(text)] == text)")
    if dropped:
        notes.append(f"data: {dropped} training answers skipped (answer_start does not point at their text)")
    train_examples = train_examples[:cfg.max_train_examples]
    eval_examples = eval_examples[:cfg.max_eval_examples]
    window = dict(max_seq_len=cfg.max_seq_len, doc_stride=cfg.doc_stride, max_query_len=cfg.max_query_len)
    train_arrays = features_to_arrays(make_features(train_examples, tokenizer, training=True, **window))
    eval_features = make_features(eval_examples, tokenizer, training=False, **window)
    notes.append(f"train: {len(train_examples)} questions -> {len(train_arrays['input_ids'])} windows; {label}: "
                 f"{len(eval_examples)} questions -> {len(eval_features)} windows (max_seq_len {cfg.max_seq_len}, "
                 f"stride {cfg.doc_stride})")
    evals = [EvalSet(label, features_to_arrays(eval_features), (eval_examples, eval_features), len(eval_examples))]
    return TaskData(train_arrays, evals, notes)


def _squad_evaluate(params, model_config, eval_set: EvalSet, cfg, *, xp, out_dir: Path) -> dict:
    """Decode the held-out windows, write predictions.json (official format) and gold.json (the
    evaluated questions as SQuAD v1.1, so ``evaluate_qa gold.json predictions.json`` rescores a dev
    split); official EM / F1."""
    examples, features = eval_set.payload
    start_logits, end_logits = predict(SQUAD, params, eval_set.arrays, model_config, xp=xp, batch_size=cfg.batch_size,
                                       threads=cfg.threads or 1)
    predictions = decode_predictions(examples, features, start_logits, end_logits,
                                     n_best=cfg.n_best, max_answer_len=cfg.max_answer_len)
    write_predictions(predictions, out_dir / "predictions.json")
    write_text_atomic(out_dir / "gold.json", json.dumps(examples_to_squad(examples)))
    return evaluate(examples, predictions)


# --------------------------------------------------------------------------- SST-2


def _require_file(flag: str, value, task: str) -> str:
    if value is None:
        raise ValueError(f"{flag} is required for {task}: pass the data file (python -m minispanbert.data download "
                         f"{task} puts it under data/{task}/)")
    return value


def _sst2_load(cfg, tokenizer) -> TaskData:
    train = sst2.read_sst2(_require_file("--train", cfg.train, "sst2"))[:cfg.max_train_examples]
    if train and train[0].label is None:
        raise ValueError(f"{cfg.train}: has no labels (GLUE's test.tsv format, index<TAB>sentence): train on "
                         "train.tsv")
    train_arrays, cut = sst2.sentence_arrays(train, tokenizer, cfg.max_seq_len)
    notes = [f"train: {len(train)} sentences from {cfg.train} ({cut} cut to --max-seq-len {cfg.max_seq_len})"]
    evals = []
    for label, path in (("dev", _require_file("--dev", cfg.dev, "sst2")), ("test", cfg.test)):
        if path is None:
            continue
        examples = sst2.read_sst2(path)[:cfg.max_eval_examples]
        if examples[0].label is None:
            raise ValueError(f"{path}: has no labels (GLUE keeps SST-2's test labels private): evaluate on dev.tsv")
        arrays, cut = sst2.sentence_arrays(examples, tokenizer, cfg.max_seq_len)
        evals.append(EvalSet(label, arrays, examples, len(examples)))
        notes.append(f"{label}: {len(examples)} sentences from {path} ({cut} cut)")
    return TaskData(train_arrays, evals, notes)


def _sst2_evaluate(params, model_config, eval_set: EvalSet, cfg, *, xp, out_dir: Path) -> dict:
    """Argmax of the logits; accuracy, positive-class P / R / F1 and the confusion matrix;
    ``predictions.<label>.tsv`` holds sentence, gold and predicted label."""
    (logits,) = predict(SST2, params, eval_set.arrays, model_config, xp=xp, batch_size=cfg.batch_size,
                        threads=cfg.threads or 1)
    predicted = logits.argmax(axis=1)
    rows = "".join(f"{e.text}\t{e.label}\t{p}\n" for e, p in zip(eval_set.payload, predicted))
    write_text_atomic(out_dir / f"predictions.{_file_label(eval_set.label)}.tsv", "sentence\tlabel\tpredicted\n" + rows)
    return classification_scores(eval_set.arrays["labels"], predicted, num_labels=len(sst2.LABELS))


# --------------------------------------------------------------------------- WNUT-17


def _wnut17_load(cfg, tokenizer) -> TaskData:
    train = wnut17.read_conll(_require_file("--train", cfg.train, "wnut17"))[:cfg.max_train_examples]
    train_arrays, _, lost = wnut17.tagged_arrays(train, tokenizer, cfg.max_seq_len)
    notes = [f"train: {len(train)} sentences from {cfg.train} ({lost} words without a piece in --max-seq-len "
             f"{cfg.max_seq_len}: not trained on)"]
    evals = []
    for label, path in (("dev", _require_file("--dev", cfg.dev, "wnut17")), ("test", cfg.test)):
        if path is None:
            continue
        sentences = wnut17.read_conll(path)[:cfg.max_eval_examples]
        arrays, positions, lost = wnut17.tagged_arrays(sentences, tokenizer, cfg.max_seq_len)
        evals.append(EvalSet(label, arrays, (sentences, positions), len(sentences)))
        notes.append(f"{label}: {len(sentences)} sentences from {path} ({lost} words without a piece: predicted O, "
                     "still scored)")
    return TaskData(train_arrays, evals, notes)


def _wnut17_evaluate(params, model_config, eval_set: EvalSet, cfg, *, xp, out_dir: Path) -> dict:
    """Each word's tag from its first piece; conlleval entity scores and WNUT-17 surface forms on
    the file's own words; ``predictions.<label>.conll`` is word, gold, predicted (conlleval input)."""
    sentences, positions = eval_set.payload
    (logits,) = predict(WNUT17, params, eval_set.arrays, model_config, xp=xp, batch_size=cfg.batch_size,
                        threads=cfg.threads or 1)
    predicted = wnut17.decode_tags(logits, positions)
    wnut17.write_conll_predictions(sentences, predicted, out_dir / f"predictions.{_file_label(eval_set.label)}.conll")
    return ner_scores([s.words for s in sentences], [s.tags for s in sentences], predicted)


# --------------------------------------------------------------------------- the table


@dataclass(frozen=True)
class Task:
    name: str
    title: str
    metric: str                    # the headline score in the scores dict
    metric_title: str
    loss_title: str
    init_params: Callable          # (model_config, seed, *, xp, dtype) -> params
    forward: Callable              # (params, arrays, model_config, *, xp, train, rng) -> (out, cache)
    backward: Callable             # (cache, *, xp) -> grads
    logits_of: Callable            # out -> tuple of host logits
    load: Callable                 # (cfg, tokenizer) -> TaskData
    evaluate: Callable             # (params, model_config, EvalSet, cfg, *, xp, out_dir) -> scores
    label_keys: tuple[str, ...]    # the arrays that are labels (left out when predicting)
    trim: bool                     # batches may drop padding columns (False for QA: its softmax spans all T)
    # The loss as sum_t w_t L_t, each L_t a mean over its counted labels (a batch split over threads
    # weighs each shard's L_t by its share of the counts: minispanbert.thread_parallel):
    term_counts: Callable          # host batch -> {term: labels counted}
    term_losses: Callable          # out -> {term: L_t}
    term_weights: dict             # {term: w_t}


def _counted(labels) -> int:
    return int(np.count_nonzero(np.asarray(labels) != IGNORE_INDEX))


# One cross-entropy over the "labels" array (SST-2: one per sentence; WNUT-17: one per word)
ONE_LABEL_TERM = dict(term_counts=lambda batch: {"labels": _counted(batch["labels"])},
                      term_losses=lambda out: {"labels": out.loss}, term_weights={"labels": 1.0})


def _qa_counts(batch) -> dict:
    T = batch["input_ids"].shape[1]
    return {end: _counted(position_labels(batch[f"{end}_positions"], T, f"{end}_positions")) for end in ("start", "end")}


SQUAD = Task("squad", "SQuAD v1.1 extractive QA", "f1", "F1 (official)", "(CE_start + CE_end) / 2",
             lambda config, seed, *, xp, dtype: init_qa_params(config, seed, xp=xp, dtype=dtype),
             qa_forward, qa_backward, lambda out: (to_numpy(out.start_logits), to_numpy(out.end_logits)),
             _squad_load, _squad_evaluate, ("start_positions", "end_positions"), trim=False,
             term_counts=_qa_counts, term_losses=lambda out: {"start": out.start_loss, "end": out.end_loss},
             term_weights={"start": 0.5, "end": 0.5})
SST2 = Task("sst2", "SST-2 sentiment", "accuracy", "accuracy (%)", "cross-entropy",
            lambda config, seed, *, xp, dtype: init_sequence_classification_params(config, len(sst2.LABELS), seed,
                                                                                   xp=xp, dtype=dtype),
            sequence_classification_forward, sequence_classification_backward, lambda out: (to_numpy(out.logits),),
            _sst2_load, _sst2_evaluate, ("labels",), trim=True, **ONE_LABEL_TERM)
WNUT17 = Task("wnut17", "WNUT-17 NER", "f1", "entity F1 (conlleval, %)", "token cross-entropy (first pieces)",
              lambda config, seed, *, xp, dtype: init_token_classification_params(config, len(wnut17.TAGS), seed,
                                                                                  xp=xp, dtype=dtype),
              token_classification_forward, token_classification_backward, lambda out: (to_numpy(out.logits),),
              _wnut17_load, _wnut17_evaluate, ("labels",), trim=True, **ONE_LABEL_TERM)
TASKS = {task.name: task for task in (SQUAD, SST2, WNUT17)}
