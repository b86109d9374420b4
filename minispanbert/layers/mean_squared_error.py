"""Mean squared error: the loss of a one-label sentence classifier, which Hugging Face's
``BertForSequenceClassification`` treats as regression (``problem_type`` "regression",
``MSELoss()(logits.squeeze(), labels.squeeze())``).

Forward, for predictions z (N,) and real targets y (N,):

    loss = (1 / N) * sum_n (z_n - y_n)^2

Backward:

    dloss/dz_n = 2 (z_n - y_n) / N

Cache: the residuals r = z - y.
"""
from __future__ import annotations


def mean_squared_error_forward(predictions, targets, *, xp):
    """predictions (N,) float, targets (N,) of the same dtype -> (loss 0-d array, cache)."""
    if predictions.ndim != 1 or targets.shape != predictions.shape or predictions.shape[0] == 0:
        raise ValueError(f"mean_squared_error expects predictions (N,) and targets (N,) with N >= 1, got "
                         f"{predictions.shape} and {targets.shape}")
    residuals = predictions - targets
    loss = xp.mean(residuals * residuals)
    return loss, residuals


def mean_squared_error_backward(dloss, cache, *, xp):
    """dloss (scalar) -> dpredictions (N,)."""
    residuals = cache
    # loss = (1/N) sum_n r_n^2,  r_n = z_n - y_n
    return residuals * (2.0 * dloss / residuals.shape[0])
