"""The optimizer phase the commands install over optim.clip_and_step and optim.adamw_update
(engine/kernels/adamw.py): the same clipping and update as the textbook ones, computed in cache-sized
work items on the threads and in place. The textbook's results against hand-computed and PyTorch
values are in tests/core/test_optim.py."""
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
    w0 = rng.normal(size=(5, thread_pool.WORK_ITEM_ELEMENTS // 2))
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
        assert optim.adamw_update is in_place.adamw_update and optim.clip_and_step is in_place.clip_and_step
        assert layernorm.layernorm_forward is not reference_layernorm
        assert layernorm.layernorm_forward.reference is reference_layernorm
        with kernels.installed():  # a command inside a command installs nothing more
            assert layernorm.layernorm_forward.reference is reference_layernorm
    assert optim.adamw_update is reference_adamw and layernorm.layernorm_forward is reference_layernorm


def _model_like(rng, dtype):
    """Parameters of several sizes: one spans 2.5 work items, one is a strided (transposed) view."""
    shapes = {"dense.weight": (7, 5), "dense.bias": (7,), "LayerNorm.weight": (5,),
              "table.weight": (5, thread_pool.WORK_ITEM_ELEMENTS // 2)}
    params = {name: rng.standard_normal(shape).astype(dtype) for name, shape in shapes.items()}
    params["decoder.weight"] = rng.standard_normal((6, 4)).astype(dtype).T
    return params


@pytest.mark.parametrize("dtype, rtol", [(np.float64, 1e-13), (np.float32, 2e-5)])
@pytest.mark.parametrize("max_norm", [0.5, 1e6])  # clipped, and not
def test_clip_and_step_equals_the_textbook_clipping_then_update(dtype, rtol, max_norm):
    rng = np.random.default_rng(5)
    textbook = _model_like(rng, dtype)
    fast = {name: w.copy() if w.flags.c_contiguous else w.copy().T.copy().T for name, w in textbook.items()}
    assert not fast["decoder.weight"].flags.c_contiguous
    mask = optim.no_decay_mask(textbook)
    states = optim.adamw_init(textbook, xp=np), optim.adamw_init(fast, xp=np)
    for step in range(3):
        grads = {name: rng.standard_normal(w.shape).astype(dtype) for name, w in textbook.items()}
        textbook_grads, fast_grads = {k: g.copy() for k, g in grads.items()}, {k: g.copy() for k, g in grads.items()}
        norm_textbook = optim.clip_and_step(textbook, textbook_grads, states[0], lr=1e-2, max_grad_norm=max_norm,
                                            weight_decay=0.1, decay_mask=mask, xp=np)
        norm_fast = in_place.clip_and_step(fast, fast_grads, states[1], lr=1e-2, max_grad_norm=max_norm,
                                           weight_decay=0.1, decay_mask=mask, xp=np)
        assert norm_fast.dtype == dtype and norm_fast.shape == ()
        np.testing.assert_allclose(norm_fast, norm_textbook, rtol=rtol)
        for name in textbook:  # the gradients are clipped in place, the weights and moments updated
            np.testing.assert_allclose(fast_grads[name], textbook_grads[name], rtol=rtol, err_msg=name)
            np.testing.assert_allclose(fast[name], textbook[name], rtol=rtol, atol=rtol * 1e-3, err_msg=name)
            np.testing.assert_allclose(states[1].m[name], states[0].m[name], rtol=rtol, atol=rtol * 1e-3, err_msg=name)
    assert states[1].t == 3


def test_clip_and_step_gives_the_same_bits_on_any_thread_count(monkeypatch):
    """The norm's partial sums follow the work items, which the arrays alone fix."""
    runs = []
    for threads in (1, 3):
        monkeypatch.setattr(thread_pool, "cpu_threads", lambda: threads)
        rng = np.random.default_rng(9)
        params = _model_like(rng, np.float32)
        state = optim.adamw_init(params, xp=np)
        grads = {name: rng.standard_normal(w.shape).astype(np.float32) for name, w in params.items()}
        norm = in_place.clip_and_step(params, grads, state, lr=1e-2, max_grad_norm=1.0, weight_decay=0.1,
                                      decay_mask=None, xp=np)
        runs.append((norm, params))
    assert runs[0][0] == runs[1][0]
    for name in runs[0][1]:
        np.testing.assert_array_equal(runs[0][1][name], runs[1][1][name])


@pytest.mark.filterwarnings("ignore:invalid value encountered in multiply:RuntimeWarning")  # inf * 0, in both
def test_a_non_finite_gradient_is_clipped_as_the_textbook_clips_it():
    """An inf gradient: the norm is inf, the coefficient 0, so finite gradients become 0 and the
    inf one nan (inf * 0), as in optim.clip_grad_norm; the caller decides what to do."""
    grads = {"a": np.array([1.0, np.inf], np.float32), "b": np.ones(3, np.float32)}
    params = {k: np.zeros_like(g) for k, g in grads.items()}
    textbook = {k: g.copy() for k, g in grads.items()}
    norm = in_place.clip_and_step(params, grads, optim.adamw_init(params, xp=np), lr=0.1, max_grad_norm=1.0,
                                  weight_decay=0.0, decay_mask=None, xp=np)
    assert np.isinf(norm) and np.isinf(optim.clip_grad_norm(textbook, 1.0, xp=np))
    for name in grads:
        np.testing.assert_array_equal(grads[name], textbook[name])
