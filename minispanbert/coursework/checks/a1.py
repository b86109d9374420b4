"""A1 graded tests: backprop through a Transformer layer (linear, LayerNorm, GeLU, softmax,
self-attention, cross-entropy). float64, tiny shapes, fixed seeds; every backward is compared with
the reference and with centred differences of the submission's own forward. A backward test first
asks whether the submission's forward reproduced the reference on its inputs: if not (that forward's
own test charges it), the backward is judged by ``Check.derivative`` against either the reference or
its own forward, so one forward mistake costs its own points only. Every argument that changes an
output is exercised: eps at a size where it matters, dropout on (a fixed ``KeyedRandom``, forward
and backward), a non-default ignore_index, rows shifted far apart for the softmax."""
from __future__ import annotations

import numpy as np

from .harness import Check, at_scale, graded

DROPOUT_KEY = (11, 0, 3)  # a fixed (seed, step, purpose) key: KeyedRandom draws the same masks every time

TESTS: dict = {}
test = graded(TESTS)

LINEAR = "minispanbert.layers.linear:"
LAYERNORM = "minispanbert.layers.layernorm:"
GELU = "minispanbert.layers.gelu:"
SOFTMAX = "minispanbert.layers.softmax:"
ATTENTION = "minispanbert.layers.attention:"
CROSS_ENTROPY = "minispanbert.layers.cross_entropy:"

LN_HINT = ("LayerNorm's mean and variance both depend on every input of the row, so dx has two "
           "extra terms besides rstd * g (g = dy * gamma): one through the mean, one through the variance.")
SOFTMAX_HINT = ("softmax is not elementwise: each output depends on every input of its row, so dx "
                "must subtract sum_j(y_j dy_j) before multiplying by y (the Jacobian diag(y) - y y^T).")


def _backward_tuple(check, result, names, function):
    check.expect(isinstance(result, tuple) and len(result) == len(names),
                 f"{function} must return a tuple ({', '.join(names)}), got {type(result).__name__}"
                 + (f" of length {len(result)}" if isinstance(result, tuple) else ""))
    return result


def _float32(seed, *shapes, scale=1.0, offset=0.0):
    """Standard normal float32 arrays of ``shapes`` (times ``scale``, plus ``offset``) for a backward at scale."""
    rng = np.random.default_rng(seed)
    return [(rng.normal(size=shape) * scale + offset).astype(np.float32) for shape in shapes]


# Inputs at scale (harness.at_scale): about 1e5 elements each, where the analytic backward takes milliseconds
# and centred differences, 2 forward passes per element in float64, take (measured, one core) ~300 s for
# linear, ~170 s for LayerNorm, ~270 s for GeLU, ~100 s for softmax, ~190 s for attention and ~140 s for the
# cross-entropy: 10 to 30 times the 10 s a test may run.


@test
def linear_forward(check: Check):
    rng = check.rng(101)
    x, w, b = rng.normal(size=(2, 3, 4)), rng.normal(size=(5, 4)), rng.normal(size=5)
    y, _ = check.function(LINEAR + "linear_forward")(x, w, b, xp=np)
    check.close("y", y, hint="W is stored (OUT, IN) like torch.nn.Linear, so y = x W^T + b; the leading "
                             "axes (2, 3) of x pass through unchanged.")


@test
def linear_backward(check: Check):
    rng = check.rng(102)
    x, w, b = rng.normal(size=(2, 3, 4)), rng.normal(size=(5, 4)), rng.normal(size=5)
    dy = rng.normal(size=(2, 3, 5))
    forward = check.function(LINEAR + "linear_forward")
    y, cache = forward(x, w, b, xp=np)
    ok = check.agrees("y (forward)", y)
    dx, dw, db = _backward_tuple(check, check.function(LINEAR + "linear_backward")(dy, cache, xp=np),
                                 ("dx", "dweight", "dbias"), "linear_backward")
    hint = "dW and db sum over every leading position (here 2 x 3), not just the last one."
    for name, value, grad in (("dx", x, dx), ("dweight", w, dw), ("dbias", b, db)):
        check.derivative(name, grad, lambda: forward(x, w, b, xp=np)[0], value, dy, forward_agrees=ok,
                         hint="dx = dy W has the shape of x." if name == "dx" else hint)
    x, w, b, dy = _float32(103, (4, 32, 256), (512, 256), (512,), (4, 32, 512))
    y, cache = forward(x, w, b, xp=np)
    names = ("dx", "dweight", "dbias")
    at_scale(check, "y", y, dict(zip(names, _backward_tuple(
        check, check.function(LINEAR + "linear_backward")(dy, cache, xp=np), names, "linear_backward"))))


def _layernorm_inputs(seed, shape, *, offset=1.0, scale=3.0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=shape) * scale + offset  # a non-zero mean and a non-unit scale
    gamma, beta = rng.normal(size=shape[-1:]), rng.normal(size=shape[-1:])
    return x, gamma, beta, rng.normal(size=shape)


@test
def layernorm_forward(check: Check):
    x, gamma, beta, _ = _layernorm_inputs(201, (4, 6))
    y, _ = check.function(LAYERNORM + "layernorm_forward")(x, gamma, beta, xp=np)
    hint = ("normalise each row over its last axis with the biased variance mean((x - mu)^2) and eps inside "
            "the square root, then scale by gamma and shift by beta.")
    check.close("y", y, hint=hint)
    # eps = 0.1 on rows of spread 0.3 (variance 0.09): eps now matters as much as the variance, so an
    # ignored eps argument or eps outside the square root shows (at BERT's 1e-12 neither can).
    x_small, gamma, beta, _ = _layernorm_inputs(205, (4, 6), offset=2.0, scale=0.3)
    y_eps, _ = check.function(LAYERNORM + "layernorm_forward")(x_small, gamma, beta, xp=np, eps=0.1)
    check.close("y with eps=0.1", y_eps, hint="use the eps argument, inside the square root: "
                                             "rstd = 1 / sqrt(var + eps). " + hint)


def _layernorm_backward(check, x, gamma, beta, dy):
    forward = check.function(LAYERNORM + "layernorm_forward")
    y, cache = forward(x, gamma, beta, xp=np)
    ok = check.agrees("y (forward)", y)
    grads = _backward_tuple(check, check.function(LAYERNORM + "layernorm_backward")(dy.copy(), cache, xp=np),
                            ("dx", "dgamma", "dbeta"), "layernorm_backward")
    return forward, ok, grads


def _layernorm_at_scale(check, judged):
    """layernorm_backward at scale; only the gradients ``judged`` by the calling test are compared."""
    x, gamma, beta, dy = _float32(206, (96, 1024), (1024,), (1024,), (96, 1024))
    y, cache = check.function(LAYERNORM + "layernorm_forward")(x * 3 + 1, gamma, beta, xp=np)
    names = ("dx", "dgamma", "dbeta")
    grads = dict(zip(names, _backward_tuple(
        check, check.function(LAYERNORM + "layernorm_backward")(dy, cache, xp=np), names, "layernorm_backward")))
    at_scale(check, "y", y, {name: grads[name] for name in judged})


@test
def layernorm_backward_input(check: Check):
    x, gamma, beta, dy = _layernorm_inputs(202, (4, 6))
    forward, ok, (dx, _, _) = _layernorm_backward(check, x, gamma, beta, dy)
    check.derivative("dx", dx, lambda: forward(x, gamma, beta, xp=np)[0], x, dy, forward_agrees=ok, hint=LN_HINT)
    _layernorm_at_scale(check, ("dx",))


@test
def layernorm_backward_params(check: Check):
    x, gamma, beta, dy = _layernorm_inputs(203, (4, 6))
    forward, ok, (_, dgamma, dbeta) = _layernorm_backward(check, x, gamma, beta, dy)
    hint = "dgamma = sum over rows of dy * xhat, dbeta = sum over rows of dy (one value per feature)."
    for name, value, grad in (("dgamma", gamma, dgamma), ("dbeta", beta, dbeta)):
        check.derivative(name, grad, lambda: forward(x, gamma, beta, xp=np)[0], value, dy, forward_agrees=ok,
                         hint=hint)
    _layernorm_at_scale(check, ("dgamma", "dbeta"))


@test
def layernorm_backward_3d(check: Check):
    """Hidden: three axes and a large offset (a (B, T, H) activation whose mean dwarfs its spread)."""
    x, gamma, beta, dy = _layernorm_inputs(204, (2, 3, 5), offset=50.0, scale=0.5)
    forward, ok, (dx, dgamma, dbeta) = _layernorm_backward(check, x, gamma, beta, dy)
    hint = "reduce over the last axis only for dx, and over every leading axis for dgamma and dbeta. " + LN_HINT
    for name, value, grad in (("dx", x, dx), ("dgamma", gamma, dgamma), ("dbeta", beta, dbeta)):
        check.derivative(name, grad, lambda: forward(x, gamma, beta, xp=np)[0], value, dy, forward_agrees=ok,
                         rtol=1e-6, hint=hint)
    _layernorm_at_scale(check, ("dx", "dgamma", "dbeta"))


def _gelu_inputs():
    rng = np.random.default_rng(301)
    x = np.concatenate([np.linspace(-5, 5, 11), rng.normal(size=9) * 2]).reshape(4, 5)
    return x, rng.normal(size=(4, 5))


@test
def gelu_forward(check: Check):
    x, _ = _gelu_inputs()
    y, _ = check.function(GELU + "gelu_forward")(x, xp=np)
    check.close("y", y, hint="the exact GeLU x * Phi(x), Phi(x) = (1 + erf(x / sqrt 2)) / 2 (BERT's), "
                             "not the tanh approximation.")


@test
def gelu_backward(check: Check):
    x, dy = _gelu_inputs()
    forward = check.function(GELU + "gelu_forward")
    y, cache = forward(x, xp=np)
    ok = check.agrees("y (forward)", y)
    dx = check.function(GELU + "gelu_backward")(dy.copy(), cache, xp=np)
    hint = "gelu'(x) = Phi(x) + x * phi(x): the product rule on x * Phi(x) gives two terms; multiply by dy."
    check.derivative("dx", dx, lambda: forward(x, xp=np)[0], x, dy, forward_agrees=ok, hint=hint)
    x, dy = _float32(302, (64, 1024), (64, 1024), scale=2.0)
    y, cache = forward(x, xp=np)
    at_scale(check, "y", y, {"dx": check.function(GELU + "gelu_backward")(dy, cache, xp=np)})


@test
def softmax_forward(check: Check):
    rng = np.random.default_rng(401)
    x = rng.normal(size=(3, 7)) * 2
    forward = check.function(SOFTMAX + "softmax_forward")
    y, _ = forward(x.copy(), xp=np)
    check.close("y", y, hint="exp(x - max) / sum(exp(x - max)) over the last axis.")
    big, _ = forward(x + 1000.0, xp=np)
    check.close("y_shifted_by_1000", big, hint="softmax(x + 1000) must equal softmax(x): subtract each "
                                              "row's max before exp, or exp overflows to inf.")
    apart, _ = forward(x + np.array([[0.0], [800.0], [-800.0]]), xp=np)
    check.close("y_rows_shifted_by_0_800_-800", apart, hint="each row is its own softmax: subtract each ROW's "
                "max (axis=-1, keepdims=True), not one max over the whole array (exp(-1600) underflows to 0).")


@test
def softmax_backward(check: Check):
    rng = np.random.default_rng(402)
    x, dy = rng.normal(size=(3, 7)) * 2, rng.normal(size=(3, 7))
    forward = check.function(SOFTMAX + "softmax_forward")
    y, cache = forward(x.copy(), xp=np)
    ok = check.agrees("y (forward)", y)
    dx = check.function(SOFTMAX + "softmax_backward")(dy.copy(), cache, xp=np)
    check.derivative("dx", dx, lambda: forward(x.copy(), xp=np)[0], x, dy, forward_agrees=ok, hint=SOFTMAX_HINT)
    x, dy = _float32(403, (128, 1024), (128, 1024), scale=2.0)
    y, cache = forward(x, xp=np)
    at_scale(check, "y", y, {"dx": check.function(SOFTMAX + "softmax_backward")(dy, cache, xp=np)})


def _attention_inputs():
    rng = np.random.default_rng(501)
    B, T, H = 2, 4, 6
    x = rng.normal(size=(B, T, H))
    weights = {}
    for name in ("q", "k", "v", "o"):
        weights["w" + name] = rng.normal(size=(H, H)) * 0.5
        weights["b" + name] = rng.normal(size=H) * 0.1
    attention_mask = np.array([[1, 1, 1, 1], [1, 1, 1, 0]])  # sequence 2 has one padded key
    return x, weights, attention_mask, rng.normal(size=(B, T, H))


ATTENTION_HINT = ("scores = Q K^T / sqrt(D) with D = hidden / num_heads (per head, not the hidden size), "
                  "plus mask_bias, softmax over the keys (last axis), then A V, merge the heads, project with Wo.")


@test
def attention_forward(check: Check):
    x, w, attention_mask, _ = _attention_inputs()
    mask_bias = check.function(ATTENTION + "padding_mask_bias")(attention_mask, np.float64, xp=np)
    forward = check.function(ATTENTION + "self_attention_forward")
    out, _ = forward(x, **w, mask_bias=mask_bias, num_heads=2, xp=np)
    check.close("out", out, hint=ATTENTION_HINT)
    x_changed = x.copy()
    x_changed[1, 3] += 10.0  # the padded token of sequence 2
    out_changed, _ = forward(x_changed, **w, mask_bias=mask_bias, num_heads=2, xp=np)
    check.expect(np.allclose(out_changed[1, :3], out[1, :3], rtol=1e-9, atol=1e-12),
                 "out: changing a padded token changed the outputs at real tokens of its sequence: add "
                 "mask_bias to the scores before the softmax, so padded keys get weight exp(-huge) = 0.")


@test
def attention_backward(check: Check):
    x, w, attention_mask, dout = _attention_inputs()
    mask_bias = check.function(ATTENTION + "padding_mask_bias")(attention_mask, np.float64, xp=np)
    forward = check.function(ATTENTION + "self_attention_forward")
    out, cache = forward(x, **w, mask_bias=mask_bias, num_heads=2, xp=np)
    _attention_gradients(check, lambda: forward(x, **w, mask_bias=mask_bias, num_heads=2, xp=np), x, w, out, cache,
                         dout)
    _attention_at_scale(check)


def _attention_gradients(check, run_forward, x, w, out, cache, dout):
    """self_attention_backward's nine gradients for ``cache``, judged against the reference (when ``out``
    agrees with it) or the centred differences of ``run_forward``."""
    ok = check.agrees("out (forward)", out)
    names = ("dx", "dwq", "dbq", "dwk", "dbk", "dwv", "dbv", "dwo", "dbo")
    grads = dict(zip(names, _backward_tuple(
        check, check.function(ATTENTION + "self_attention_backward")(dout.copy(), cache, xp=np), names,
        "self_attention_backward")))
    check.expect(np.all(np.isfinite(np.asarray(grads["dbk"], dtype=float))) and np.abs(grads["dbk"]).max() < 1e-8,
                 f"dbk: max |dbk| = {np.abs(grads['dbk']).max():.1e}, expected 0 (below 1e-8): adding bk to every "
                 "key shifts each score row by the constant q.bk, and softmax ignores a constant shift "
                 "(this test also runs your linear and softmax functions: if their tests fail, fix those first).")
    inputs = {"dx": x, **{"d" + k: v for k, v in w.items()}}
    hint = ("go through the forward in reverse: Wo, A V, the softmax Jacobian, the 1/sqrt(D) scale, "
            "then Q, K and V (dx collects all three). This test also runs your linear and softmax "
            "functions: if their tests fail, fix those first.")
    for name in names:
        if name == "dbk":
            continue
        check.derivative(name, grads[name], lambda: run_forward()[0], inputs[name], dout, forward_agrees=ok,
                         rtol=1e-6, hint=hint)


def _attention_at_scale(check, **dropout):
    """The gradients but dbk (zero up to float32 rounding) for 2 x 64 tokens of 128 features, 4 heads."""
    B, T, H = 2, 64, 128
    x, dout, *weights = _float32(502, (B, T, H), (B, T, H), *[(H, H), (H,)] * 4, scale=H ** -0.5)
    w = dict(zip(("wq", "bq", "wk", "bk", "wv", "bv", "wo", "bo"), weights))
    attention_mask = np.ones((B, T), dtype=np.int64)
    attention_mask[1, -5:] = 0
    mask_bias = check.function(ATTENTION + "padding_mask_bias")(attention_mask, np.float32, xp=np)
    out, cache = check.function(ATTENTION + "self_attention_forward")(x, **w, mask_bias=mask_bias, num_heads=4,
                                                                      xp=np, **dropout)
    names = ("dx", "dwq", "dbq", "dwk", "dbk", "dwv", "dbv", "dwo", "dbo")
    grads = dict(zip(names, _backward_tuple(
        check, check.function(ATTENTION + "self_attention_backward")(dout, cache, xp=np), names,
        "self_attention_backward")))
    del grads["dbk"]
    at_scale(check, "out", out, grads)


def _dropout_rng():
    from minispanbert.keyed_random import KeyedRandom

    return KeyedRandom(DROPOUT_KEY, xp=np)


DROPOUT_HINT = ("attention dropout: A~ = dropout_forward(A, dropout_p, rng, xp=xp, train=train) on the softmax "
                "output, one draw of shape (B, heads, T, T), then C = A~ V; backward: dA = dropout_backward(dA~).")


@test
def attention_dropout_forward(check: Check):
    """Dropout on (p = 0.3, a fixed KeyedRandom): the masks fall on the attention weights."""
    x, w, attention_mask, _ = _attention_inputs()
    mask_bias = check.function(ATTENTION + "padding_mask_bias")(attention_mask, np.float64, xp=np)
    forward = check.function(ATTENTION + "self_attention_forward")
    out, _ = forward(x, **w, mask_bias=mask_bias, num_heads=2, xp=np, dropout_p=0.3, rng=_dropout_rng(), train=True)
    check.close("out with dropout 0.3 (training)", out, hint=DROPOUT_HINT)
    out_eval, _ = forward(x, **w, mask_bias=mask_bias, num_heads=2, xp=np, dropout_p=0.3, rng=_dropout_rng(),
                          train=False)
    check.close("out with dropout 0.3 (evaluation)", out_eval, hint="with train=False dropout is the identity.")


@test
def attention_dropout_backward(check: Check):
    """The nine gradients through the same dropout masks (each forward gets a fresh generator with
    the same key, so the centred differences see the same masks)."""
    x, w, attention_mask, dout = _attention_inputs()
    mask_bias = check.function(ATTENTION + "padding_mask_bias")(attention_mask, np.float64, xp=np)
    forward = check.function(ATTENTION + "self_attention_forward")

    def run_forward():
        return forward(x, **w, mask_bias=mask_bias, num_heads=2, xp=np, dropout_p=0.3, rng=_dropout_rng(), train=True)
    out, cache = run_forward()
    _attention_gradients(check, run_forward, x, w, out, cache, dout)
    _attention_at_scale(check, dropout_p=0.3, rng=_dropout_rng(), train=True)


def _cross_entropy_inputs():
    rng = np.random.default_rng(601)
    logits = rng.normal(size=(6, 5)) * 2
    labels = np.array([0, 4, -100, 2, 2, 1])  # one ignored row (IGNORE_INDEX = -100)
    return logits, labels


CE_HINT = ("average -log softmax(z_n)[y_n] over the rows whose label is not ignore_index (-100); compute "
           "log softmax as z - max - log(sum(exp(z - max))).")


@test
def cross_entropy_forward(check: Check):
    logits, labels = _cross_entropy_inputs()
    forward = check.function(CROSS_ENTROPY + "cross_entropy_forward")
    loss, _ = forward(logits.copy(), labels, xp=np)
    check.close("loss", loss, hint=CE_HINT)
    minus_one = np.where(labels == -100, -1, labels)
    minus_one[0] = -1  # two rows ignored through ignore_index=-1
    loss_ignore, _ = forward(logits.copy(), minus_one, xp=np, ignore_index=-1)
    check.close("loss with ignore_index=-1", loss_ignore, hint="compare the labels with the ignore_index "
                                                                "argument, not with the constant -100.")


@test
def cross_entropy_backward(check: Check):
    logits, labels = _cross_entropy_inputs()
    forward = check.function(CROSS_ENTROPY + "cross_entropy_forward")
    loss, cache = forward(logits.copy(), labels, xp=np)
    ok = check.agrees("loss (forward)", loss)
    dlogits = check.function(CROSS_ENTROPY + "cross_entropy_backward")(0.7, cache, xp=np)
    hint = ("dz_n = dloss * (softmax(z_n) - onehot(y_n)) / (number of counted rows), and exactly 0 for an "
            "ignored row.")
    check.derivative("dlogits", dlogits, lambda: forward(logits.copy(), labels, xp=np)[0], logits,
                     np.float64(0.7), forward_agrees=ok, hint=hint)
    _cross_entropy_at_scale(check)


def _cross_entropy_at_scale(check, *, judged=True):
    """cross_entropy_backward at scale, its gradient compared when ``judged``."""
    logits, = _float32(602, (256, 256), scale=2.0)
    labels = np.random.default_rng(603).integers(0, 256, size=256)
    labels[::7] = -100
    loss, cache = check.function(CROSS_ENTROPY + "cross_entropy_forward")(logits, labels, xp=np)
    dlogits = check.function(CROSS_ENTROPY + "cross_entropy_backward")(np.float32(0.7), cache, xp=np)
    at_scale(check, "loss", loss, {"dlogits": dlogits} if judged else {})


@test
def cross_entropy_edge_cases(check: Check):
    """Hidden: huge logits stay finite; a batch with every label ignored gives loss 0 and gradient 0."""
    logits, labels = _cross_entropy_inputs()
    forward = check.function(CROSS_ENTROPY + "cross_entropy_forward")
    backward = check.function(CROSS_ENTROPY + "cross_entropy_backward")
    loss_big, _ = forward(logits * 500.0, labels, xp=np)
    check.close("loss_of_huge_logits", loss_big, hint="use the log-sum-exp with the row max subtracted: "
                                                     "exp(1000) overflows.")
    ignored = np.full(6, -100)
    loss, cache = forward(logits.copy(), ignored, xp=np)
    dlogits = np.asarray(backward(1.0, cache, xp=np))
    check.expect(np.isfinite(float(loss)) and float(loss) == 0.0 and np.all(dlogits == 0),
                 f"with every label ignored the loss must be 0 and the gradient 0 (got loss {float(loss)!r}): "
                 "divide by max(count, 1), not by a count of 0.")
    _cross_entropy_at_scale(check, judged=False)  # run only: the edge cases judge no ordinary gradient
