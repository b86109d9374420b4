"""The numba kernels (engine/kernels/cpu) against the reference ops of minispanbert/layers.

Each kernel must give the reference op's output, its gradient and a cache the reference backward
accepts (and the other way round), on odd shapes (rows not a multiple of the thread count, ignored
labels, a strided input). The dispatch rules are tested too, through ``kernels.installed()``:
float64 and a missing numba fall back to the reference ops. Skipped without numba.
"""
import numpy as np
import pytest

from minispanbert import optim
from minispanbert.engine import kernels
from minispanbert.engine.kernels import adamw as installed_optimizer
from minispanbert.engine.kernels import cpu as fused_cpu
from minispanbert.engine.kernels.adamw import clip_and_step as in_place_clip_and_step
from minispanbert.engine.kernels.cpu import cross_entropy as cpu_cross_entropy
from minispanbert.engine.kernels.cpu import gelu as cpu_gelu
from minispanbert.engine.kernels.cpu import layernorm as cpu_layernorm
from minispanbert.engine.kernels.cpu import softmax as cpu_softmax
from minispanbert.layers import cross_entropy, gelu, layernorm, softmax

pytest.importorskip("numba")

RTOL, ATOL = 2e-5, 2e-6  # float32: the kernels accumulate in float64, the plain ops in float32


def close(a, b):
    np.testing.assert_allclose(a, b, rtol=RTOL, atol=ATOL)


@pytest.fixture(autouse=True)
def fused_cpu_on(monkeypatch):
    """The numba kernels are opt-in (MINISPANBERT_FUSED_CPU=1): on for these tests."""
    monkeypatch.setenv(fused_cpu.ENV_VAR, "1")


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def test_gelu_matches_the_plain_op(rng):
    x = (3 * rng.standard_normal((3, 7, 33))).astype(np.float32)
    dy = rng.standard_normal(x.shape).astype(np.float32)
    y, cache = cpu_gelu.gelu_forward(x, xp=np)
    y_ref, cache_ref = gelu.gelu_forward(x, xp=np)
    close(y, y_ref)
    close(cpu_gelu.gelu_backward(dy, cache, xp=np), gelu.gelu_backward(dy, cache_ref, xp=np))
    close(cpu_gelu.gelu_backward(dy, cache_ref, xp=np), gelu.gelu_backward(dy, cache, xp=np))


def test_layernorm_matches_the_plain_op(rng):
    x = (2 + 3 * rng.standard_normal((5, 9, 24))).astype(np.float32)[:, ::2]  # strided: 5 x 5 rows
    gamma, beta = (rng.standard_normal(24).astype(np.float32) for _ in range(2))
    dy = rng.standard_normal(x.shape).astype(np.float32)
    y, cache = cpu_layernorm.layernorm_forward(x, gamma, beta, xp=np)
    y_ref, cache_ref = layernorm.layernorm_forward(x, gamma, beta, xp=np)
    close(y, y_ref)
    assert cache[1].shape == cache_ref[1].shape == (5, 5, 1)
    for got, want in zip(cpu_layernorm.layernorm_backward(dy, cache, xp=np),
                         layernorm.layernorm_backward(dy, cache_ref, xp=np)):
        close(got, want)
    close(cpu_layernorm.layernorm_backward(dy, cache_ref, xp=np)[1], layernorm.layernorm_backward(dy, cache, xp=np)[1])


def test_softmax_matches_the_plain_op(rng):
    x = (5 * rng.standard_normal((2, 3, 11, 11))).astype(np.float32)
    x[..., 3] = -3.4e38  # a masked key: exp underflows to 0, as in attention with padding
    dy = rng.standard_normal(x.shape).astype(np.float32)
    y, cache = cpu_softmax.softmax_forward(x, xp=np)
    y_ref, cache_ref = softmax.softmax_forward(x, xp=np)
    close(y, y_ref)
    assert np.all(y[..., 3] == 0)
    close(cpu_softmax.softmax_backward(dy, cache, xp=np), softmax.softmax_backward(dy, cache_ref, xp=np))


def test_cross_entropy_matches_the_plain_op(rng):
    logits = (4 * rng.standard_normal((13, 50))).astype(np.float32)
    labels = rng.integers(0, 50, 13)
    labels[[2, 7]] = cross_entropy.IGNORE_INDEX
    dloss = np.float32(0.7)
    loss, cache = cpu_cross_entropy.cross_entropy_forward(logits, labels, xp=np)
    loss_ref, cache_ref = cross_entropy.cross_entropy_forward(logits, labels, xp=np)
    assert loss.dtype == loss_ref.dtype == np.float32 and loss.shape == ()
    close(loss, loss_ref)
    dlogits = cpu_cross_entropy.cross_entropy_backward(dloss, cache, xp=np)
    close(dlogits, cross_entropy.cross_entropy_backward(dloss, cache_ref, xp=np))
    assert np.all(dlogits[[2, 7]] == 0)
    # all labels ignored: loss 0, gradient 0 (the reference op's convention)
    none = np.full(13, cross_entropy.IGNORE_INDEX)
    loss, cache = cpu_cross_entropy.cross_entropy_forward(logits, none, xp=np)
    assert loss == 0 and not cpu_cross_entropy.cross_entropy_backward(dloss, cache, xp=np).any()


def test_numba_adamw_equals_the_numpy_work_items_bit_for_bit_over_several_steps(rng, monkeypatch):
    """The compiled item loop (cpu/adamw.py, on for large models when numba is installed) against the NumPy item,
    clipping included: the same float32 operations in the same order give the same bits."""
    params = {"w": rng.standard_normal((37, 5)).astype(np.float32), "b.bias": rng.standard_normal(5).astype(np.float32)}
    mask = optim.no_decay_mask(params)
    runs = {}
    monkeypatch.setattr(installed_optimizer, "COMPILED_LOOP_MIN_PARAMETERS", 0)  # the loop for these few too
    for have_numba in (True, False):
        monkeypatch.setattr(fused_cpu, "_HAVE_NUMBA", have_numba)
        p = {k: v.copy() for k, v in params.items()}
        state = optim.adamw_init(p, xp=np)
        for step in range(3):
            grads = {k: np.random.default_rng(step).standard_normal(v.shape).astype(np.float32) for k, v in p.items()}
            in_place_clip_and_step(p, grads, state, lr=1e-2, max_grad_norm=1.0, weight_decay=0.1, decay_mask=mask,
                                   xp=np)
        runs[have_numba] = (p, state, grads)
    for k in params:
        for numba_run, numpy_run in zip(runs[True], runs[False]):
            np.testing.assert_array_equal(numba_run[k] if isinstance(numba_run, dict) else numba_run.m[k],
                                          numpy_run[k] if isinstance(numpy_run, dict) else numpy_run.m[k])
        np.testing.assert_array_equal(runs[True][1].v[k], runs[False][1].v[k])
    assert not np.allclose(runs[True][0]["w"], params["w"])  # it moved


def test_dispatch_float32_only_and_plain_ops_without_numba(monkeypatch):
    x32, x64 = np.ones(3, np.float32), np.ones(3)
    assert fused_cpu.applies(np, x32) and not fused_cpu.applies(np, x64)
    monkeypatch.setenv(fused_cpu.ENV_VAR, "0")
    assert not fused_cpu.applies(np, x32)
    monkeypatch.delenv(fused_cpu.ENV_VAR)
    assert not fused_cpu.applies(np, x32)  # off unless asked for
    monkeypatch.setenv(fused_cpu.ENV_VAR, "1")
    monkeypatch.setattr(fused_cpu, "_HAVE_NUMBA", False)  # as on a machine without numba
    assert not fused_cpu.applies(np, x32)
    calls = []
    monkeypatch.setattr(fused_cpu.cpu_kernel, "__call__", lambda *a: calls.append(a))
    with kernels.installed():
        y, _ = gelu.gelu_forward(np.linspace(-2, 2, 9, dtype=np.float32), xp=np)
    assert y.dtype == np.float32 and not calls


def test_installed_kernels_run_for_float32_and_the_reference_for_float64(monkeypatch):
    """Inside ``kernels.installed()`` a float32 layernorm goes to the numba kernel, a float64 one (a
    gradient check) to the reference op; outside it, always the reference op."""
    ran = []
    monkeypatch.setattr(cpu_layernorm, "layernorm_forward", lambda *a, **k: ran.append("kernel") or (None, None))
    x32, gamma, beta = np.ones((2, 4), np.float32), np.ones(4, np.float32), np.zeros(4, np.float32)
    with kernels.installed():
        layernorm.layernorm_forward(x32, gamma, beta, xp=np)
        y64, _ = layernorm.layernorm_forward(*(a.astype(np.float64) for a in (x32, gamma, beta)), xp=np)
    y32, _ = layernorm.layernorm_forward(x32, gamma, beta, xp=np)
    assert ran == ["kernel"]
    assert y64.dtype == np.float64 and y32.dtype == np.float32
