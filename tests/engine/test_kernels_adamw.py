"""The in-place AdamW the commands install over optim.adamw_update (engine/kernels/adamw.py): the
same update as the textbook one, computed in slices on the threads and in place. Its results
against hand-computed and PyTorch values are in tests/core/test_optim.py (both implementations)."""
import numpy as np
import pytest

from minispanbert import optim
from minispanbert.engine.kernels import adamw as in_place
from minispanbert.engine.parallel import threads as thread_pool

EPS = 1e-8


@pytest.mark.parametrize("threads", [1, 3])
def test_adamw_on_a_parameter_split_among_threads_updates_every_element_once(monkeypatch, threads):
    """A weight of 2.5 slices (parallel_for): each element follows the update rule, written out
    here over whole arrays; a slice skipped or done twice would leave its elements off."""
    monkeypatch.setattr(thread_pool, "cpu_threads", lambda: threads)
    rng = np.random.default_rng(7)
    w0 = rng.normal(size=(5, in_place.CHUNK // 2))
    params = {"big.weight": w0.copy()}
    state = optim.adamw_init(params, xp=np)
    w, m, v = w0.copy(), np.zeros_like(w0), np.zeros_like(w0)
    lr, wd, b1, b2 = 0.01, 0.1, 0.9, 0.999
    for t in (1, 2):
        g = rng.normal(size=w0.shape)
        in_place.adamw_update(params, {"big.weight": g.copy()}, state, lr=lr, weight_decay=wd, decay_mask=None, xp=np)
        w = w * (1 - lr * wd)
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        w = w - lr * (m / (1 - b1**t)) / (np.sqrt(v / (1 - b2**t)) + EPS)
    np.testing.assert_allclose(state.m["big.weight"], m, rtol=1e-12)
    np.testing.assert_allclose(state.v["big.weight"], v, rtol=1e-12)
    np.testing.assert_allclose(params["big.weight"], w, rtol=1e-12, atol=1e-15)


def test_adamw_updates_a_strided_parameter_in_place_like_a_contiguous_one():
    rng = np.random.default_rng(3)
    strided = {"w": rng.normal(size=(6, 4)).T}  # a transposed view
    contiguous = {"w": np.ascontiguousarray(strided["w"])}
    states = [optim.adamw_init(p, xp=np) for p in (strided, contiguous)]
    for _ in range(2):
        g = rng.normal(size=(4, 6))
        for params, state in zip((strided, contiguous), states):
            in_place.adamw_update(params, {"w": g.copy()}, state, lr=0.1, decay_mask=None, xp=np)
    assert not strided["w"].flags.c_contiguous
    np.testing.assert_array_equal(strided["w"], contiguous["w"])


@pytest.mark.parametrize("dtype, rtol", [(np.float64, 1e-13), (np.float32, 1e-5)])
def test_in_place_adamw_equals_the_textbook_update(dtype, rtol):
    """Ten steps of BERT's recipe (decay mask, varying lr) on two copies: the two implementations
    differ only in the order of the float operations, so they agree to the dtype's rounding."""
    rng = np.random.default_rng(11)
    shapes = {"dense.weight": (7, 5), "dense.bias": (7,), "LayerNorm.weight": (5,), "table.weight": (3, 1 << 10)}
    textbook = {name: rng.standard_normal(shape).astype(dtype) for name, shape in shapes.items()}
    fast = {name: w.copy() for name, w in textbook.items()}
    mask = optim.no_decay_mask(textbook)
    states = optim.adamw_init(textbook, xp=np), optim.adamw_init(fast, xp=np)
    for step in range(10):
        grads = {name: rng.standard_normal(w.shape).astype(dtype) for name, w in textbook.items()}
        lr = 1e-2 * (step + 1) / 10
        optim.adamw_update(textbook, {k: g.copy() for k, g in grads.items()}, states[0], lr=lr, weight_decay=0.1,
                           decay_mask=mask, xp=np)
        in_place.adamw_update(fast, grads, states[1], lr=lr, weight_decay=0.1, decay_mask=mask, xp=np)
    for name in textbook:
        assert fast[name].dtype == dtype
        np.testing.assert_allclose(fast[name], textbook[name], rtol=rtol, atol=rtol * 1e-3, err_msg=name)
        np.testing.assert_allclose(states[1].v[name], states[0].v[name], rtol=rtol, err_msg=name)
    assert states[0].t == states[1].t == 10


def test_installed_replaces_the_reference_ops_only_inside_the_block():
    from minispanbert.engine import kernels
    from minispanbert.layers import layernorm

    reference_adamw, reference_layernorm = optim.adamw_update, layernorm.layernorm_forward
    with kernels.installed():
        assert optim.adamw_update is in_place.adamw_update
        assert layernorm.layernorm_forward is not reference_layernorm
        assert layernorm.layernorm_forward.reference is reference_layernorm
        with kernels.installed():  # a command inside a command installs nothing more
            assert layernorm.layernorm_forward.reference is reference_layernorm
    assert optim.adamw_update is reference_adamw and layernorm.layernorm_forward is reference_layernorm
