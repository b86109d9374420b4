"""SpanBERT in PyTorch, written independently of the NumPy engine: a test oracle and a speed baseline.

The same network as :mod:`minispanbert.model.spanbert` (BERT encoder + MLM head + SBO head, spec
§3-§4, SpanBERT §3.2-§3.3), built from the standard PyTorch modules and functions on the same
flat parameter dict (Hugging Face names, weights (out, in)):

    embeddings   LayerNorm(E_word[ids] + E_pos[0..T-1] + E_type[types])         nn.Embedding, nn.LayerNorm
    layer        a = LayerNorm(h + W_o SDPA(Q, K, V, additive padding mask))     F.scaled_dot_product_attention
                 h' = LayerNorm(a + W_2 gelu(W_1 a + b_1) + b_2)                  nn.GELU(approximate="none")
    MLM head     logits = LayerNorm(gelu(W h_M + b)) E^T + b_mlm                 masked positions only, E tied
    SBO head     logits = T_2(T_1([h_{s-1}; h_{e+1}; p_{i-s}])) E^T + b_sbo       T_k = LayerNorm(gelu(Linear))
    loss         F.cross_entropy(MLM, ignore_index=-100) + w * F.cross_entropy(SBO)   (mean reductions)

Sentence classification (the fine-tuning row of the benchmark, :func:`build_sequence_classifier`)
puts Hugging Face ``BertForSequenceClassification``'s head on the same encoder modules:

    pooler       p = tanh(W_p h[:, 0] + b_p)                                     bert.pooler.dense
    classifier   logits = W_c p + b_c;  loss = F.cross_entropy(logits, labels)   classifier

Nothing here calls the NumPy layers, so agreement between the two is evidence that both are right.
The module hierarchy mirrors Hugging Face ``BertForPreTraining`` (plus ``cls.sbo`` for SBO), so
``model.named_parameters()`` yields exactly our parameter names; the MLM and SBO decoders have no
weight of their own and read ``bert.embeddings.word_embeddings.weight``, so autograd sums the
embedding's three gradient sources by itself.

Torch is optional: this file never imports it. Every function takes the ``torch`` module as its
first argument, as the engine takes ``xp``, and the caller brings it (the tests use
``pytest.importorskip("torch")``).

Dropout is not implemented: the reference always runs in eval mode, whatever the config's dropout
probabilities say (they are accepted and ignored). Compare it with the engine at ``train=False``.

Conventions copied from the engine where PyTorch has none: a batch with no MLM target or no SBO
target (or ``sbo_weight == 0``) gives that loss part 0 rather than the NaN of an empty mean, and the
parameters it did not reach get zero gradients (the engine's ``pretraining_backward`` does the same).
"""
from __future__ import annotations

import functools
from types import SimpleNamespace

import numpy as np

from minispanbert.backend import check_dtype, to_numpy
from minispanbert.layers.cross_entropy import IGNORE_INDEX

BATCH_FIELDS = ("input_ids", "attention_mask", "token_type_ids", "mlm_labels",
                "sbo_batch", "sbo_left", "sbo_right", "sbo_rel_pos", "sbo_target")


def torch_dtype(torch, dtype):
    """"float32" / "float64" (or the NumPy dtype) -> the torch dtype; anything else is a ValueError."""
    return getattr(torch, check_dtype(dtype).name)


def _module_classes(torch):
    """The nn.Module subclasses, defined here because ``torch`` is only known at call time. Each
    attribute name is the Hugging Face name of that piece, so parameter names come out right."""
    nn, F = torch.nn, torch.nn.functional

    class Embeddings(nn.Module):                       # bert.embeddings
        def __init__(self, c):
            super().__init__()
            self.word_embeddings = nn.Embedding(c.vocab_size, c.hidden_size)
            self.position_embeddings = nn.Embedding(c.max_position_embeddings, c.hidden_size)
            self.token_type_embeddings = nn.Embedding(c.type_vocab_size, c.hidden_size)
            self.LayerNorm = nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps)

        def forward(self, input_ids, token_type_ids):
            positions = torch.arange(input_ids.shape[1], device=input_ids.device)
            summed = self.word_embeddings(input_ids) + self.position_embeddings(positions) \
                + self.token_type_embeddings(token_type_ids)
            return self.LayerNorm(summed)

    class SelfAttention(nn.Module):                    # attention.self: Q, K, V and the scores
        def __init__(self, c):
            super().__init__()
            self.num_heads = c.num_attention_heads
            self.query = nn.Linear(c.hidden_size, c.hidden_size)
            self.key = nn.Linear(c.hidden_size, c.hidden_size)
            self.value = nn.Linear(c.hidden_size, c.hidden_size)

        def split_heads(self, x):                      # (B, T, H) -> (B, NH, T, D)
            B, T, H = x.shape
            return x.view(B, T, self.num_heads, H // self.num_heads).transpose(1, 2)

        def forward(self, x, mask_bias):
            q, k, v = (self.split_heads(f(x)) for f in (self.query, self.key, self.value))
            # softmax(q k^T / sqrt(D) + mask_bias) v; SDPA's default scale is 1/sqrt(D)
            context = F.scaled_dot_product_attention(q, k, v, attn_mask=mask_bias)
            B, NH, T, D = context.shape
            return context.transpose(1, 2).reshape(B, T, NH * D)

    class AddNorm(nn.Module):                          # attention.output and output: LN(x + dense(s))
        def __init__(self, in_features, c):
            super().__init__()
            self.dense = nn.Linear(in_features, c.hidden_size)
            self.LayerNorm = nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps)

        def forward(self, sublayer_in, residual):
            return self.LayerNorm(residual + self.dense(sublayer_in))

    class Attention(nn.Module):
        def __init__(self, c):
            super().__init__()
            self.self = SelfAttention(c)               # Hugging Face's name, hence "attention.self.query"
            self.output = AddNorm(c.hidden_size, c)

        def forward(self, h, mask_bias):
            return self.output(self.self(h, mask_bias), h)

    class Intermediate(nn.Module):
        def __init__(self, c):
            super().__init__()
            self.dense = nn.Linear(c.hidden_size, c.intermediate_size)
            self.act = nn.GELU(approximate="none")     # the exact erf form, as BERT and SpanBERT

        def forward(self, a):
            return self.act(self.dense(a))

    class Layer(nn.Module):                            # bert.encoder.layer.{i}, post-LayerNorm
        def __init__(self, c):
            super().__init__()
            self.attention = Attention(c)
            self.intermediate = Intermediate(c)
            self.output = AddNorm(c.intermediate_size, c)

        def forward(self, h, mask_bias):
            a = self.attention(h, mask_bias)
            return self.output(self.intermediate(a), a)

    class Encoder(nn.Module):
        def __init__(self, c):
            super().__init__()
            self.layer = nn.ModuleList(Layer(c) for _ in range(c.num_hidden_layers))

    class Bert(nn.Module):
        def __init__(self, c):
            super().__init__()
            self.embeddings = Embeddings(c)
            self.encoder = Encoder(c)

        def forward(self, input_ids, token_type_ids, attention_mask):
            """(B, T) long tensors -> final hidden states (B, T, H)."""
            h = self.embeddings(input_ids, token_type_ids)
            # additive mask (B, 1, 1, T): 0 at real keys, the most negative float at padded keys
            mask_bias = (1.0 - attention_mask.to(h.dtype))[:, None, None, :] * torch.finfo(h.dtype).min
            for layer in self.encoder.layer:
                h = layer(h, mask_bias)
            return h

    class Pooler(nn.Module):                           # bert.pooler: tanh(dense(h[:, 0])), BERT's "C" vector
        def __init__(self, c):
            super().__init__()
            self.dense = nn.Linear(c.hidden_size, c.hidden_size)

        def forward(self, h):
            return torch.tanh(self.dense(h[:, 0]))

    class BertWithPooler(Bert):
        def __init__(self, c):
            super().__init__(c)
            self.pooler = Pooler(c)

    class Transform(nn.Module):                        # LN(gelu(dense(x))): MLM transform, each SBO MLP layer
        def __init__(self, in_features, c):
            super().__init__()
            self.dense = nn.Linear(in_features, c.hidden_size)
            self.LayerNorm = nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps)

        def forward(self, x):
            return self.LayerNorm(F.gelu(self.dense(x), approximate="none"))

    class Predictions(nn.Module):                      # cls.predictions (decoder weight tied to E)
        def __init__(self, c):
            super().__init__()
            self.transform = Transform(c.hidden_size, c)
            self.bias = nn.Parameter(torch.zeros(c.vocab_size))

    class SpanBoundaryHead(nn.Module):                 # cls.sbo, SpanBERT §3.2 eqs. (1)-(2)
        def __init__(self, c):
            super().__init__()
            self.position_embeddings = nn.Embedding(c.sbo_max_targets, c.sbo_position_dim)
            self.mlp = nn.ModuleList([Transform(2 * c.hidden_size + c.sbo_position_dim, c), Transform(c.hidden_size, c)])
            self.bias = nn.Parameter(torch.zeros(c.vocab_size))

    class Heads(nn.Module):
        def __init__(self, c):
            super().__init__()
            self.predictions = Predictions(c)
            self.sbo = SpanBoundaryHead(c)

    class TorchSpanBert(nn.Module):
        """Encoder + MLM head + SBO head; ``named_parameters()`` gives our flat parameter names."""

        def __init__(self, c):
            super().__init__()
            self.config = c
            self.bert = Bert(c)
            self.cls = Heads(c)

        def encode(self, input_ids, token_type_ids, attention_mask):
            """(B, T) long tensors -> final hidden states (B, T, H)."""
            return self.bert(input_ids, token_type_ids, attention_mask)

        def decode(self, y, bias):
            """Tied decoder: y (N, H) -> logits y E^T + bias (N, V)."""
            return F.linear(y, self.bert.embeddings.word_embeddings.weight, bias)

        def mlm_logits(self, h, positions):
            """h (B, T, H), positions (N,) flat indices into B*T -> (N, V)."""
            gathered = h.reshape(-1, h.shape[-1])[positions]
            return self.decode(self.cls.predictions.transform(gathered), self.cls.predictions.bias)

        def sbo_logits(self, h, left, right, rel_pos):
            """left, right (P,) flat indices of x_{s-1} and x_{e+1}, rel_pos (P,) = i - s -> (P, V)."""
            flat = h.reshape(-1, h.shape[-1])
            sbo = self.cls.sbo
            y = torch.cat([flat[left], flat[right], sbo.position_embeddings(rel_pos)], dim=1)
            for transform in sbo.mlp:
                y = transform(y)
            return self.decode(y, sbo.bias)

    class TorchSequenceClassifier(nn.Module):
        """Encoder + pooler + linear classifier (Hugging Face ``BertForSequenceClassification``):
        logits = classifier(tanh(pooler(h[:, 0]))); ``named_parameters()`` gives our names."""

        def __init__(self, c, num_labels):
            super().__init__()
            self.config = c
            self.bert = BertWithPooler(c)
            self.classifier = nn.Linear(c.hidden_size, num_labels)

        def forward(self, input_ids, token_type_ids, attention_mask):
            """(B, T) long tensors -> logits (B, C)."""
            return self.classifier(self.bert.pooler(self.bert(input_ids, token_type_ids, attention_mask)))

    return TorchSpanBert, TorchSequenceClassifier


def build_reference(torch, params: dict, config, *, dtype="float64", device="cpu"):
    """A ``torch.nn.Module`` (TorchSpanBert) holding copies of ``params`` (host or device arrays,
    Hugging Face names, weights (out, in)) in ``dtype`` on ``device``.

    The names must be exactly the model's: a missing or unexpected name, or a wrong shape, is a
    ValueError. The module has ``encode(input_ids, token_type_ids, attention_mask) -> h``,
    ``mlm_logits(h, positions)`` and ``sbo_logits(h, left, right, rel_pos)``; use
    :func:`reference_loss` for the pretraining loss. Dropout in ``config`` is ignored (eval mode).
    """
    model = _module_classes(torch)[0](config)
    return _with_params(torch, model, params, dtype, device, "init_pretraining_params")


def build_sequence_classifier(torch, params: dict, config, *, dtype="float64", device="cpu"):
    """A TorchSequenceClassifier holding copies of ``params`` (the encoder's ``bert.*``,
    ``bert.pooler.dense.*`` and ``classifier.*``; C labels from ``classifier.weight``), as
    :func:`build_reference` builds the pretraining model; ``model(input_ids, token_type_ids,
    attention_mask)`` gives the logits. Dropout in ``config`` is ignored (eval mode)."""
    if "classifier.weight" not in params:
        raise ValueError("parameters lack classifier.weight: build them with init_sequence_classification_params")
    model = _module_classes(torch)[1](config, int(params["classifier.weight"].shape[0]))
    return _with_params(torch, model, params, dtype, device, "init_sequence_classification_params")


def _with_params(torch, model, params: dict, dtype, device, init_name: str):
    """``model`` in ``dtype`` on ``device`` with its parameters copied from ``params`` (exactly its
    names and shapes, else a ValueError naming ``init_name``, the function that builds them), in eval mode."""
    names = dict(model.named_parameters())
    missing, unexpected = sorted(names.keys() - params.keys()), sorted(params.keys() - names.keys())
    if missing or unexpected:
        raise ValueError(f"parameters do not match the model (missing {missing[:3]}, unexpected {unexpected[:3]}): "
                         f"build them with {init_name} for the same config")
    model.to(device=device, dtype=torch_dtype(torch, dtype))
    with torch.no_grad():
        for name, tensor in names.items():
            value = np.asarray(to_numpy(params[name]))
            if value.shape != tuple(tensor.shape):
                raise ValueError(f"parameter {name!r} has shape {value.shape}, the config needs {tuple(tensor.shape)}")
            tensor.copy_(torch.from_numpy(value))
    return model.eval()


def _check_host_batch(batch, config) -> None:
    """Field, length and index-range checks on the host, so bad input is a one-line ValueError and
    not an IndexError from inside an embedding lookup."""
    missing = [f for f in BATCH_FIELDS if not hasattr(batch, f)]
    if missing:
        raise ValueError(f"batch lacks the fields {missing}: pass a masking.PretrainingBatch")
    T = batch.input_ids.shape[1]
    if T > config.max_position_embeddings:
        raise ValueError(f"sequence length {T} exceeds max_position_embeddings {config.max_position_embeddings}")
    for name, upper in (("input_ids", config.vocab_size), ("token_type_ids", config.type_vocab_size),
                        ("sbo_rel_pos", config.sbo_max_targets), ("sbo_target", config.vocab_size)):
        values = np.asarray(getattr(batch, name))
        if values.size and (values.min() < 0 or values.max() >= upper):
            raise ValueError(f"batch.{name} must lie in [0, {upper}) for this config, got [{values.min()}, {values.max()}]")


def to_torch_batch(torch, batch, config, *, device="cpu"):
    """A host batch (fields as :class:`minispanbert.masking.PretrainingBatch`), checked against
    ``config`` -> long tensors on ``device``, with the flat indices the heads use precomputed:

        mlm_positions (N,)  flat indices into B*T where mlm_labels != -100;  mlm_targets (N,)
        sbo_left, sbo_right (P,)  flat indices sbo_batch * T + column;  sbo_rel_pos, sbo_target (P,)
    An already converted batch passes through unchanged, so a benchmark can convert once.
    """
    if isinstance(batch, SimpleNamespace) and hasattr(batch, "mlm_positions"):
        return batch
    _check_host_batch(batch, config)
    T = batch.input_ids.shape[1]
    labels = np.asarray(batch.mlm_labels).reshape(-1)
    positions = np.flatnonzero(labels != IGNORE_INDEX)
    host = dict(
        input_ids=batch.input_ids, token_type_ids=batch.token_type_ids, attention_mask=batch.attention_mask,
        mlm_positions=positions, mlm_targets=labels[positions],
        sbo_left=np.asarray(batch.sbo_batch) * T + batch.sbo_left,
        sbo_right=np.asarray(batch.sbo_batch) * T + batch.sbo_right,
        sbo_rel_pos=batch.sbo_rel_pos, sbo_target=batch.sbo_target,
    )
    return SimpleNamespace(**{k: torch.as_tensor(np.asarray(v, dtype=np.int64), device=device) for k, v in host.items()})


def reference_loss(torch, model, batch, *, sbo_weight=1.0) -> dict:
    """SpanBERT's pretraining loss (the authors' ``spanbert_loss.py``, spec §3):

        loss = mean CE over MLM targets + sbo_weight * mean CE over SBO targets

    -> dict(loss, mlm_loss, sbo_loss) of 0-d tensors that carry the autograd graph. ``batch`` is a
    host batch or the result of :func:`to_torch_batch`.
    """
    F = torch.nn.functional
    device = model.bert.embeddings.word_embeddings.weight.device
    b = to_torch_batch(torch, batch, model.config, device=device)
    h = model.encode(b.input_ids, b.token_type_ids, b.attention_mask)
    zero = h.new_zeros(()) + h.sum() * 0.0  # an empty part: +0, still on the graph so backward() works
    mlm_loss = zero
    if b.mlm_targets.numel():
        mlm_loss = F.cross_entropy(model.mlm_logits(h, b.mlm_positions), b.mlm_targets, ignore_index=IGNORE_INDEX)
    sbo_loss = zero
    if sbo_weight and b.sbo_target.numel():
        sbo_loss = F.cross_entropy(model.sbo_logits(h, b.sbo_left, b.sbo_right, b.sbo_rel_pos), b.sbo_target)
    return dict(loss=mlm_loss + sbo_weight * sbo_loss, mlm_loss=mlm_loss, sbo_loss=sbo_loss)


def _fill_missing_grads(torch, model) -> None:
    """Parameters the loss did not reach get a zero gradient instead of None (as in the engine, and
    so that AdamW still decays them and ages their moments rather than skipping them)."""
    for p in model.parameters():
        if p.grad is None:
            p.grad = torch.zeros_like(p)


def reference_gradients(torch, params: dict, batch, config, *, dtype="float64", sbo_weight=1.0):
    """-> (dict(loss, mlm_loss, sbo_loss) of floats, gradients as NumPy arrays keyed like ``params``)."""
    model = build_reference(torch, params, config, dtype=dtype)
    parts = reference_loss(torch, model, batch, sbo_weight=sbo_weight)
    parts["loss"].backward()
    _fill_missing_grads(torch, model)
    grads = {name: p.grad.detach().cpu().numpy() for name, p in model.named_parameters()}
    return {k: v.item() for k, v in parts.items()}, grads


def to_torch_classification_batch(torch, arrays: dict, config, *, device="cpu"):
    """Host arrays of a sentence-classification batch (input_ids, attention_mask (B, T), optional
    token_type_ids (absent: zeros), labels (B,) class ids or IGNORE_INDEX), ids checked against
    ``config`` -> a SimpleNamespace of long tensors on ``device``. An already converted batch passes
    through unchanged."""
    if isinstance(arrays, SimpleNamespace):
        return arrays
    ids = np.asarray(arrays["input_ids"])
    if ids.shape[1] > config.max_position_embeddings:
        raise ValueError(f"sequence length {ids.shape[1]} exceeds max_position_embeddings "
                         f"{config.max_position_embeddings}")
    if ids.size and (ids.min() < 0 or ids.max() >= config.vocab_size):
        raise ValueError(f"input_ids must lie in [0, {config.vocab_size}) for this config, "
                         f"got [{ids.min()}, {ids.max()}]")
    host = dict(input_ids=ids, attention_mask=arrays["attention_mask"], labels=arrays["labels"],
                token_type_ids=arrays.get("token_type_ids", np.zeros_like(ids)))
    return SimpleNamespace(**{k: torch.as_tensor(np.asarray(v, dtype=np.int64), device=device)
                              for k, v in host.items()})


def classification_loss(torch, model, batch) -> dict:
    """Mean cross-entropy of a :func:`build_sequence_classifier` model over the batch's counted labels
    (IGNORE_INDEX rows skipped, as the engine's ``sequence_classification_forward``) -> dict(loss) of a
    0-d tensor on the autograd graph. ``batch``: host arrays or :func:`to_torch_classification_batch`'s."""
    b = to_torch_classification_batch(torch, batch, model.config, device=model.classifier.weight.device)
    logits = model(b.input_ids, b.token_type_ids, b.attention_mask)
    return dict(loss=torch.nn.functional.cross_entropy(logits, b.labels, ignore_index=IGNORE_INDEX))


class TorchTrainStep:
    """One PyTorch eager training step per call: forward and loss (``loss(batch)`` -> dict of 0-d
    tensors, "loss" among them), backward, optional global-norm clipping, ``torch.optim.AdamW``
    step. Made by :func:`torch_train_step_factory` or :func:`torch_classification_step_factory`;
    ``model`` and ``optimizer`` are the live torch objects."""

    def __init__(self, torch, model, optimizer, loss, *, max_grad_norm):
        self.torch, self.model, self.optimizer, self.loss = torch, model, optimizer, loss
        self.max_grad_norm = max_grad_norm

    def __call__(self, batch) -> dict:
        """batch (host, or converted once by the factory's converter) -> loss parts as floats."""
        torch = self.torch
        self.optimizer.zero_grad(set_to_none=True)
        parts = self.loss(batch)
        parts["loss"].backward()
        _fill_missing_grads(torch, self.model)
        if self.max_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.max_grad_norm, foreach=True)
        self.optimizer.step()
        return {k: v.item() for k, v in parts.items()}  # .item() waits for the device: honest timings

    def compile(self) -> None:
        """Apply ``torch.compile`` (default backend, inductor) to the forward and loss: the first
        calls after this compile them (their backward too), the later ones run the compiled code.
        Clipping and AdamW stay eager (AdamW is fused already). A machine where inductor cannot
        build (no C++ compiler, ...) raises from the first call, not from here."""
        self.loss = self.torch.compile(self.loss)

    def numpy_params(self) -> dict:
        """The current parameters as host NumPy arrays, keyed like the engine's."""
        return {name: p.detach().cpu().numpy().copy() for name, p in self.model.named_parameters()}


def torch_train_step_factory(torch, params: dict, config, *, lr, betas=(0.9, 0.999), eps=1e-8,
                             weight_decay=0.01, decay_mask=None, max_grad_norm=None, sbo_weight=1.0,
                             dtype="float32", device="cpu") -> TorchTrainStep:
    """A :class:`TorchTrainStep` starting from ``params``, for comparing the engine's throughput
    with PyTorch eager on the same model, batch and dtype.

    The optimizer settings mean what they mean in :func:`minispanbert.optim.adamw_update`
    (torch.optim.AdamW is the rule that function copies): ``decay_mask`` (name -> bool, e.g.
    ``optim.no_decay_mask(params)``) exempts the False names from weight decay, None decays all.
    ``lr`` is fixed (no schedule). Written as a user tuning eager PyTorch for speed would: the
    optimizer is ``AdamW(fused=True)`` (one kernel over all parameters; ``foreach=True`` where this
    torch has no fused kernel for the device), clipping uses the foreach norm, attention is
    ``scaled_dot_product_attention`` (its fused CPU/GPU kernels in float32; in float64, which the
    cross-checks use, PyTorch runs its exact math path), and the batch is converted once by
    :func:`to_torch_batch`. ``optimizer_kind`` names the optimizer chosen. For a fair CPU comparison set
    ``torch.set_num_threads`` to the NumPy BLAS thread count first, and keep in mind that this step never
    applies dropout while the engine's training step does (a few elementwise passes more for the engine).
    """
    model = build_reference(torch, params, config, dtype=dtype, device=device)
    loss = functools.partial(reference_loss, torch, model, sbo_weight=sbo_weight)
    return _train_step(torch, model, loss, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                       decay_mask=decay_mask, max_grad_norm=max_grad_norm)


def torch_classification_step_factory(torch, params: dict, config, *, lr, betas=(0.9, 0.999), eps=1e-8,
                                      weight_decay=0.01, decay_mask=None, max_grad_norm=None,
                                      dtype="float32", device="cpu") -> TorchTrainStep:
    """:func:`torch_train_step_factory` for sentence classification (:func:`build_sequence_classifier`,
    :func:`classification_loss`; batches converted once by :func:`to_torch_classification_batch`):
    the fine-tuning step of ``python -m minispanbert.finetune sst2`` in PyTorch eager."""
    model = build_sequence_classifier(torch, params, config, dtype=dtype, device=device)
    loss = functools.partial(classification_loss, torch, model)
    return _train_step(torch, model, loss, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                       decay_mask=decay_mask, max_grad_norm=max_grad_norm)


def _train_step(torch, model, loss, *, lr, betas, eps, weight_decay, decay_mask, max_grad_norm) -> TorchTrainStep:
    """The factories' shared part: the decay groups, the fastest AdamW this torch has, the step."""
    named = dict(model.named_parameters())
    decay = {name: True for name in named} if decay_mask is None else decay_mask
    if decay.keys() != named.keys():
        raise ValueError("decay_mask must have exactly the parameter names: build it with optim.no_decay_mask(params)")
    groups = [{"params": [p for n, p in named.items() if decay[n]], "weight_decay": weight_decay},
              {"params": [p for n, p in named.items() if not decay[n]], "weight_decay": 0.0}]
    groups = [g for g in groups if g["params"]]
    try:  # one fused kernel over all parameters (torch >= 2.4 on CPU), as a user tuning for speed writes it
        optimizer, kind = torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps, fused=True), "fused AdamW"
    except (RuntimeError, TypeError, ValueError):  # older torch, or a device/dtype without the fused kernel
        optimizer, kind = torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps, foreach=True), "foreach AdamW"
    step = TorchTrainStep(torch, model, optimizer, loss, max_grad_norm=max_grad_norm)
    step.optimizer_kind = kind
    return step
