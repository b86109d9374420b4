"""Start a fine-tuning model from pretrained encoder weights: every task model (QA, sentence and
token classification) is the encoder's ``bert.*`` tensors plus a freshly drawn task head.

The encoder tensors (`encoder.init_encoder_params`) must all be in the pretrained weights with the
right shapes; BERT's pooler ``bert.pooler.*`` is taken when present (a Hugging Face BERT has one)
and stays freshly drawn when not (SpanBERT, like RoBERTa, pretrains without NSP and so without a
pooler). Everything else the pretrained weights hold (the MLM and SBO heads ``cls.*``, an earlier
task head) is reported as unused.

The encoder is whatever the task model's parameters hold under a model-type prefix (``bert.``,
``roberta.``, ``albert.``, ``electra.``: the config's ``model_type``, `encoder.encoder_prefix`), so an
ELECTRA discriminator (``electra.*``; its generator ``generator.*`` and its head are then unused) or
an ALBERT encoder fine-tunes like BERT's; ``<prefix>pooler.*`` is the optional part.
"""
from __future__ import annotations

ENCODER_PREFIXES = ("bert.", "roberta.", "albert.", "electra.")


def _is_optional(name: str) -> bool:
    return name.split(".", 1)[1].startswith("pooler.")


def load_encoder_weights(params: dict, pretrained: dict, *, xp) -> tuple[dict, list[str]]:
    """-> (``params`` with its encoder tensors replaced by ``pretrained``'s, cast to their dtype,
    names of the pretrained tensors not used). Raises a one-line ValueError when a required encoder
    tensor is missing or any taken tensor has the wrong shape."""
    encoder = [name for name in params if name.startswith(ENCODER_PREFIXES)]
    missing = sorted(name for name in encoder if name not in pretrained and not _is_optional(name))
    if missing:
        raise ValueError(
            f"the pretrained weights lack {len(missing)} encoder tensors (e.g. {missing[0]!r}): "
            "pass a checkpoint written by python -m minispanbert.train"
        )
    params = dict(params)
    taken = set()
    for name in encoder:
        if name not in pretrained:
            continue
        if tuple(pretrained[name].shape) != tuple(params[name].shape):
            raise ValueError(
                f"pretrained tensor {name!r} has shape {tuple(pretrained[name].shape)} but the model config "
                f"needs {tuple(params[name].shape)}: the checkpoint's weights and config disagree"
            )
        params[name] = xp.asarray(pretrained[name]).astype(params[name].dtype)
        taken.add(name)
    return params, sorted(name for name in pretrained if name not in taken)
