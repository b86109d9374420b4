"""The fused CuPy kernels (engine/kernels/cuda) against the reference ops (minispanbert/layers).

Every test runs twice: on a real GPU through CuPy (skipped without one), and on the CPU through
``tests/cuda_emulator.py``, which compiles the same CUDA source with g++ and OpenMP (skipped
without a compiler). The reference is always the NumPy reference op, itself
gradient-checked in float64 in test_layers.py. Shapes are chosen to hit the kernels' edge cases:
rows shorter than a warp, rows longer than the block (the threads' stride loops), a last column
block only partly inside the row, a last chunk of rows shorter than the others, empty batches, and
rows whose every value is far below zero: a fully padded attention row (every score at the mask's
-finfo.max / 2, where the plain softmax gives a uniform row) and rows of values around -1e4 (a
running max started at 0 instead of at the row's first element underflows every exp to 0 and
gives 0/0 = NaN there). Every comparison fails on a NaN or an infinity on either side.
"""
import shutil
import subprocess

import numpy as np
import pytest

from minispanbert.engine import kernels
from minispanbert.engine.check_gradients import CHECK_CONFIG, hand_batch, scaled_model_params
from minispanbert.engine.kernels import cuda as fused
from minispanbert.engine.kernels.cuda import cross_entropy as fused_cross_entropy
from minispanbert.engine.kernels.cuda import gelu as fused_gelu
from minispanbert.engine.kernels.cuda import layernorm as fused_layernorm
from minispanbert.engine.kernels.cuda import softmax as fused_softmax
from minispanbert.layers.cross_entropy import IGNORE_INDEX, cross_entropy_backward, cross_entropy_forward
from minispanbert.layers.gelu import gelu_backward, gelu_forward
from minispanbert.layers.layernorm import layernorm_backward, layernorm_forward
from minispanbert.layers.softmax import softmax_backward, softmax_forward
from minispanbert.model.spanbert_loss import pretraining_backward, pretraining_forward

from conftest import CUPY_SKIP_REASON, assert_allclose_finite
from cuda_emulator import EmulatedCuPy, compiler_missing_reason, param_names

EMULATOR_SKIP_REASON = compiler_missing_reason()
EMULATED = EmulatedCuPy()

# float32: the reference's NumPy erf approximation (4e-7) and different summation orders;
# float64: summation order only.
TOLERANCE = {np.float32: dict(rtol=2e-5, atol=2e-6), np.float64: dict(rtol=1e-11, atol=1e-13)}


class Device:
    """Where the fused kernels run: ``xp`` for the layer functions and the host<->device copies."""

    def __init__(self, xp, to_device, to_host):
        self.xp, self.to_device, self.to_host = xp, to_device, to_host

    def put(self, *arrays):
        return tuple(self.to_device(a) for a in arrays)


@pytest.fixture(params=["emulated", "cupy"])
def device(request, monkeypatch):
    if request.param == "cupy":
        if CUPY_SKIP_REASON is not None:
            pytest.skip(CUPY_SKIP_REASON)
        import cupy

        return Device(cupy, cupy.asarray, cupy.asnumpy)
    if EMULATOR_SKIP_REASON is not None:
        pytest.skip(EMULATOR_SKIP_REASON)
    # Small blocks: an OpenMP team per block on two cores, and rows longer than a block to stride over.
    monkeypatch.setattr(fused, "MAX_ROW_BLOCK", 64)
    monkeypatch.setattr(fused_layernorm, "PARAM_GRAD_BLOCK", 32)
    return Device(EMULATED, np.asarray, np.asarray)


DTYPES = [np.float32, np.float64]


def assert_close(actual, expected, dtype, what):
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    assert actual.dtype == expected.dtype, f"{what}: dtype {actual.dtype} != {expected.dtype}"
    assert_allclose_finite(actual, expected, err_msg=what, **TOLERANCE[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(3, 2, 7), (5, 100)], ids=["short-rows", "rows-longer-than-block"])
def test_softmax_matches_reference(device, dtype, shape, rng):
    x = (rng.standard_normal(shape) * 4).astype(dtype)
    x[0, ..., shape[-1] // 2] += 1000.0          # exp(x - max) must not overflow: the max must be the true one
    x[-1, ..., -1] = np.finfo(dtype).min / 2     # a padded key, as the attention mask makes it
    dy = rng.standard_normal(shape).astype(dtype)
    y_ref, cache_ref = softmax_forward(x, xp=np)
    dx_ref = softmax_backward(dy, cache_ref, xp=np)

    (x_dev, dy_dev) = device.put(x, dy)
    y, cache = fused_softmax.softmax_forward(x_dev, xp=device.xp)
    dx = fused_softmax.softmax_backward(dy_dev, cache, xp=device.xp)
    assert_close(device.to_host(y), y_ref, dtype, "softmax forward")
    assert_close(device.to_host(dx), dx_ref, dtype, "softmax backward")


def _far_below_zero_rows(shape, dtype, rng, offset=-1e4):
    """Rows 0-3 of a (rows, n) array: fully padded (every value the attention mask's finfo.min / 2),
    all around ``offset``, all around ``offset`` but the first element padded, and an ordinary row
    whose first element is padded (the max is not the first element)."""
    padded = np.finfo(dtype).min / 2
    x = (rng.standard_normal(shape) * 3).astype(dtype)
    x[0] = padded
    x[1] = offset + x[1]
    x[2] = offset + x[2]
    x[2, 0] = padded
    x[3, 0] = padded
    return x


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(4, 7), (5, 100)], ids=["short-rows", "rows-longer-than-block"])
def test_softmax_fully_padded_and_very_negative_rows(device, dtype, shape, rng):
    x = _far_below_zero_rows(shape, dtype, rng)
    dy = rng.standard_normal(shape).astype(dtype)
    y_ref, cache_ref = softmax_forward(x, xp=np)
    dx_ref = softmax_backward(dy, cache_ref, xp=np)
    np.testing.assert_allclose(y_ref[0], 1.0 / shape[-1], rtol=1e-6)  # the reference itself: a uniform row
    assert y_ref[2, 0] == 0.0 and y_ref[3, 0] == 0.0

    x_dev, dy_dev = device.put(x, dy)
    y, cache = fused_softmax.softmax_forward(x_dev, xp=device.xp)
    dx = fused_softmax.softmax_backward(dy_dev, cache, xp=device.xp)
    assert_close(device.to_host(y), y_ref, dtype, "softmax forward, rows far below zero")
    assert_close(device.to_host(dx), dx_ref, dtype, "softmax backward, rows far below zero")


@pytest.mark.parametrize("dtype", DTYPES)
def test_cross_entropy_very_negative_rows(device, dtype, rng):
    """Logits all far below zero (and one row with a padded-size first logit): the log-sum-exp must
    start its running max at the row's own values. float32 sits at -120, where exp already
    underflows to 0 but z - lse still has float32 spacing 8e-6 (at -1e4 the recomputed
    exp(z - lse) of either implementation is only good to 5e-4); float64 at -1e4."""
    offset = -120.0 if dtype == np.float32 else -1e4
    assert np.exp(dtype(offset)) == 0.0
    logits = _far_below_zero_rows((5, 150), dtype, rng, offset)[1:]
    labels = np.array([3, 149, 0, IGNORE_INDEX], dtype=np.int64)
    loss_ref, cache_ref = cross_entropy_forward(logits, labels, xp=np)
    dlogits_ref = cross_entropy_backward(0.7, cache_ref, xp=np)
    assert np.isfinite(float(loss_ref)) and float(loss_ref) > 1.0

    logits_dev, labels_dev = device.put(logits, labels)
    loss, cache = fused_cross_entropy.cross_entropy_forward(logits_dev, labels_dev, xp=device.xp)
    dlogits = fused_cross_entropy.cross_entropy_backward(0.7, cache, xp=device.xp)
    assert_close(device.to_host(loss), loss_ref, dtype, "cross-entropy loss, rows far below zero")
    assert_close(device.to_host(dlogits), dlogits_ref, dtype, "cross-entropy dlogits, rows far below zero")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(2, 3, 20), (10, 70)], ids=["short-rows", "rows-longer-than-block"])
def test_layernorm_matches_reference(device, dtype, shape, rng, monkeypatch):
    # 4 chunks for 10 rows -> chunks of 3, 3, 3 and 1 rows; 70 columns -> column blocks of 32, 32, 6
    monkeypatch.setattr(fused_layernorm, "PARAM_GRAD_CHUNKS", 4)
    n_cols = shape[-1]
    x = (rng.standard_normal(shape) * 3 + 2).astype(dtype)
    gamma = rng.standard_normal(n_cols).astype(dtype)
    beta = rng.standard_normal(n_cols).astype(dtype)
    dy = rng.standard_normal(shape).astype(dtype)
    y_ref, cache_ref = layernorm_forward(x, gamma, beta, xp=np)
    grads_ref = layernorm_backward(dy, cache_ref, xp=np)

    x_dev, gamma_dev, beta_dev, dy_dev = device.put(x, gamma, beta, dy)
    y, cache = fused_layernorm.layernorm_forward(x_dev, gamma_dev, beta_dev, xp=device.xp)
    grads = fused_layernorm.layernorm_backward(dy_dev, cache, xp=device.xp)
    assert_close(device.to_host(y), y_ref, dtype, "LayerNorm forward")
    assert_close(device.to_host(cache[0]), cache_ref[0], dtype, "LayerNorm cached xhat")
    assert_close(device.to_host(cache[1]), cache_ref[1], dtype, "LayerNorm cached rstd")
    for name, got, want in zip(("dx", "dgamma", "dbeta"), grads, grads_ref):
        assert_close(device.to_host(got), want, dtype, f"LayerNorm {name}")


def test_layernorm_variance_does_not_cancel_when_the_mean_dwarfs_the_spread(device, rng):
    """Rows of mean 1000 and std 1 in float32: E[x^2] - mu^2 would lose most of the variance (x^2 ~ 1e6
    has a float32 spacing of 0.06), the two-pass variance the kernel computes does not."""
    x = (rng.standard_normal((4, 300)) + 1000).astype(np.float32)
    gamma, beta = np.ones(300, np.float32), np.zeros(300, np.float32)
    centred = x.astype(np.float64) - x.astype(np.float64).mean(axis=-1, keepdims=True)
    exact = centred / np.sqrt((centred**2).mean(axis=-1, keepdims=True) + 1e-12)
    y, _ = fused_layernorm.layernorm_forward(*device.put(x, gamma, beta), xp=device.xp)
    np.testing.assert_allclose(device.to_host(y), exact, atol=1e-4)


@pytest.mark.parametrize("dtype", DTYPES)
def test_gelu_matches_reference(device, dtype, rng):
    x = np.concatenate([rng.standard_normal(200) * 3, [-12.0, -5.0, 0.0, 5.0, 12.0]]).astype(dtype).reshape(5, 41)
    dy = rng.standard_normal(x.shape).astype(dtype)
    y_ref, cache_ref = gelu_forward(x, xp=np)
    dx_ref = gelu_backward(dy, cache_ref, xp=np)

    x_dev, dy_dev = device.put(x, dy)
    y, cache = fused_gelu.gelu_forward(x_dev, xp=device.xp)
    dx = fused_gelu.gelu_backward(dy_dev, cache, xp=device.xp)
    assert_close(device.to_host(y), y_ref, dtype, "GeLU forward")
    assert_close(device.to_host(dx), dx_ref, dtype, "GeLU backward")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("labels", [
    [3, IGNORE_INDEX, 0, 149, 77, IGNORE_INDEX],      # some rows ignored, first and last class
    [IGNORE_INDEX] * 4,                                # nothing counts: loss and gradient 0
    [],                                                # no rows at all (a batch without SBO targets)
], ids=["mixed", "all-ignored", "empty"])
def test_cross_entropy_matches_reference(device, dtype, labels, rng):
    labels = np.array(labels, dtype=np.int64)
    logits = (rng.standard_normal((labels.size, 150)) * 5).astype(dtype)
    if labels.size:
        logits[0, 100] += 500.0  # exp(z - max) must not overflow: the max must be the true one
    dloss = 0.7
    loss_ref, cache_ref = cross_entropy_forward(logits, labels, xp=np)
    dlogits_ref = cross_entropy_backward(dloss, cache_ref, xp=np)

    logits_dev, labels_dev = device.put(logits, labels)
    loss, cache = fused_cross_entropy.cross_entropy_forward(logits_dev, labels_dev, xp=device.xp)
    dlogits = fused_cross_entropy.cross_entropy_backward(dloss, cache, xp=device.xp)
    assert_close(device.to_host(loss), loss_ref, dtype, "cross-entropy loss")
    assert_close(device.to_host(dlogits), dlogits_ref, dtype, "cross-entropy dlogits")
    ignored = labels == IGNORE_INDEX
    assert not np.asarray(device.to_host(dlogits))[ignored].any(), "ignored rows must get exactly zero gradient"


def test_fused_kernels_refuse_other_dtypes():
    with pytest.raises(ValueError, match="float32 or float64"):
        fused.ctype(np.float16)


def test_row_block_size_is_a_power_of_two_within_limits():
    for n_cols, block in [(1, 32), (32, 32), (33, 64), (128, 128), (768, 1024), (30522, 1024)]:
        assert fused.row_block_size(n_cols) == block


@pytest.mark.parametrize("dtype", DTYPES)
def test_whole_pretraining_step_with_fused_kernels_matches_the_plain_model(dtype, monkeypatch):
    """The model with the kernels installed (as the commands run it on CuPy) gives the reference
    model's loss and every gradient: each call site hands the kernels the right arrays and caches."""
    if EMULATOR_SKIP_REASON is not None:
        pytest.skip(EMULATOR_SKIP_REASON)
    params = {name: value.astype(dtype) for name, value in scaled_model_params(seed=4).items()}
    batch = hand_batch()
    launched = []  # the kernel functions called: the reference ops would run on the emulator too
    for module in (fused_softmax, fused_layernorm, fused_gelu, fused_cross_entropy):
        for name in ("forward", "backward"):
            op = f"{module.__name__.rsplit('.', 1)[1]}_{name}"
            real = getattr(module, op)
            monkeypatch.setattr(module, op, lambda *a, _real=real, _op=op, **k: launched.append(_op) or _real(*a, **k))
    results = []
    for xp in (np, EMULATED):
        with kernels.installed():
            out, cache = pretraining_forward(dict(params), batch, CHECK_CONFIG, xp=xp)
            grads = pretraining_backward(cache, xp=xp)
        results.append({"loss": np.asarray(out.loss), **grads})
    assert set(launched) == {f"{op}_{d}" for op in ("softmax", "layernorm", "gelu", "cross_entropy")
                             for d in ("forward", "backward")}
    assert results[0].keys() == results[1].keys()
    for name, expected in results[0].items():
        assert_allclose_finite(results[1][name], expected, err_msg=name, **TOLERANCE[dtype])


def _elementwise_as_kernel(in_params, out_params, operation, name):
    """A CUDA kernel equivalent to a cupy.ElementwiseKernel with same-shaped inputs (one thread
    per element), so that nvcc can compile its operation as device code."""
    inputs, outputs = param_names(in_params), param_names(out_params)
    params = ", ".join([f"const T* {n}_in" for n in inputs] + [f"T* {n}_out" for n in outputs])
    body = ("".join(f"const T {n} = {n}_in[i]; " for n in inputs) + "".join(f"T {n}; " for n in outputs)
            + operation + "".join(f" {n}_out[i] = {n};" for n in outputs))
    return (f"template <typename T> __global__ void {name}({params}, const long long n) {{\n"
            f"    const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;\n"
            f"    if (i < n) {{ {body} }}\n}}\n"), (name,)


def _kernel_sources():
    yield "softmax", fused_softmax.SOURCE, fused_softmax.KERNELS
    yield "layernorm", fused_layernorm.SOURCE, fused_layernorm.KERNELS
    yield "cross_entropy", fused_cross_entropy.SOURCE, fused_cross_entropy.KERNELS
    yield "gelu_forward", *_elementwise_as_kernel(*fused_gelu.FORWARD)
    yield "gelu_backward", *_elementwise_as_kernel(*fused_gelu.BACKWARD)


KERNEL_SOURCES = list(_kernel_sources())


@pytest.mark.parametrize("source, kernels", [case[1:] for case in KERNEL_SOURCES],
                         ids=[case[0] for case in KERNEL_SOURCES])
def test_kernel_sources_compile_as_cuda_device_code(source, kernels, tmp_path):
    """Where the CUDA compiler is installed (no GPU needed), every kernel compiles to PTX for an H100
    (sm_90) in both float and double: the emulator's g++ is more lenient than NVRTC about device code."""
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        pytest.skip("nvcc (the CUDA toolkit) is not installed: compiling the kernels as device code is skipped")
    # taking each template's address instantiates it (an explicit instantiation would need the signature)
    addresses = "".join(f"void* address_{k}_{c} = (void*)&{k}<{c}>;\n" for k in kernels for c in fused.CTYPES.values())
    (tmp_path / "kernels.cu").write_text(source + "\n" + addresses)
    result = subprocess.run([nvcc, "-std=c++14", "-arch=sm_90", "-ptx", "kernels.cu", "-o", "kernels.ptx"],
                            cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    ptx = (tmp_path / "kernels.ptx").read_text()
    assert ptx.count(".entry") == 2 * len(kernels)
