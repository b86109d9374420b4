"""Sentence-classification scores, as scikit-learn defines them (and as the BERT sentiment
write-ups report them), all in percent:

    confusion[g, p] = number of examples with gold label g predicted as p     (rows gold, columns predicted)
    accuracy  = sum_c confusion[c, c] / N
    precision = TP / (TP + FP),  recall = TP / (TP + FN),  F1 = 2 P R / (P + R)   of the positive class
with TP = confusion[1, 1], FP = confusion[0, 1], FN = confusion[1, 0] for SST-2 (positive = 1).
A ratio with a zero denominator is 0 (scikit-learn's ``zero_division=0``).
"""
from __future__ import annotations

import numpy as np


def confusion_matrix(gold, predicted, num_labels: int) -> np.ndarray:
    """(C, C) int64 counts, rows gold, columns predicted."""
    gold, predicted = np.asarray(gold), np.asarray(predicted)
    if gold.shape != predicted.shape or gold.ndim != 1:
        raise ValueError(f"gold and predicted labels must be 1-D of one length, got {gold.shape} and {predicted.shape}")
    matrix = np.zeros((num_labels, num_labels), dtype=np.int64)
    np.add.at(matrix, (gold, predicted), 1)
    return matrix


def _ratio(numerator, denominator) -> float:
    return 100.0 * numerator / denominator if denominator else 0.0


def classification_scores(gold, predicted, num_labels: int = 2, positive: int = 1) -> dict:
    """-> {accuracy, precision, recall, f1 (of class ``positive``), confusion (nested list)}."""
    matrix = confusion_matrix(gold, predicted, num_labels)
    tp = matrix[positive, positive]
    precision = _ratio(tp, matrix[:, positive].sum())
    recall = _ratio(tp, matrix[positive, :].sum())
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"accuracy": _ratio(np.trace(matrix), matrix.sum()), "precision": float(precision),
            "recall": float(recall), "f1": float(f1), "confusion": matrix.tolist()}
