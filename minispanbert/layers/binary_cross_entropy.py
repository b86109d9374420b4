"""Binary cross-entropy with logits, averaged over the positions a mask keeps (ELECTRA's
replaced-token detection loss, Clark et al. 2020 §2, eq. for L_Disc; spec bert-family §5 step 5).

Forward, for logits z (...), labels y (...) in {0, 1} and a 0/1 mask m (...) of the same shape:

    l_t  = -y_t log sigma(z_t) - (1 - y_t) log(1 - sigma(z_t))
         = max(z_t, 0) - z_t y_t + log(1 + exp(-|z_t|))          (stable form: exp never overflows)
    loss = sum_t m_t l_t / sum_t m_t

The naive form overflows (exp(1000)) or takes log(0) for |z| of a few hundred; the stable one is
exact for every finite z (checked at z = +-1000). ``sum m = 0`` gives loss 0 and gradient 0 (no
NaN), like ``layers/cross_entropy.py`` with no target. Hugging Face's ``ElectraForPreTraining``
averages over ``attention_mask == 1`` exactly like this; Google's TF code adds 1e-6 to the
denominator, which we (following HF) do not.

Backward:

    dloss/dz_t = m_t (sigma(z_t) - y_t) / sum_t m_t

sigma is formed from the cached e = exp(-|z|) without overflow: sigma(z) = 1 / (1 + e) for z >= 0
and e / (1 + e) for z < 0.
"""
from __future__ import annotations


def binary_cross_entropy_forward(logits, labels, mask, *, xp):
    """logits (...) float, labels (...) 0/1, mask (...) 0/1 -> (loss 0-d array, cache)."""
    if labels.shape != logits.shape or mask.shape != logits.shape:
        raise ValueError(f"binary_cross_entropy expects logits, labels and mask of one shape, got "
                         f"{logits.shape}, {labels.shape} and {mask.shape}")
    y = labels.astype(logits.dtype)
    m = mask.astype(logits.dtype)
    e = xp.exp(-xp.abs(logits))  # in (0, 1]: never overflows
    per_token = xp.maximum(logits, 0) - logits * y + xp.log1p(e)
    count = xp.maximum(m.sum(), 1)
    loss = (per_token * m).sum() / count
    return loss, (logits, y, m, e, count)


def binary_cross_entropy_backward(dloss, cache, *, xp):
    """dloss (scalar) -> dlogits (...)."""
    logits, y, m, e, count = cache
    # sigma(z) = 1 / (1 + e) for z >= 0, e / (1 + e) for z < 0, with e = exp(-|z|)
    sigma = xp.where(logits >= 0, 1.0, e) / (1.0 + e)
    # loss = sum_t m_t l_t / sum_t m_t,  dl_t/dz_t = sigma(z_t) - y_t
    return (sigma - y) * m * (dloss / count)
