"""CuPy discipline without a GPU: the engine through the strict device-array TEST DOUBLE
(tests/strict_backend.py), whose arrays refuse implicit host conversion and count every copy.

A training step (with dropout), evaluation, a QA fine-tuning step and a checkpoint round trip run
on it; the training step must make no device -> host copy at all. Two planted bugs show the
double catches what it is for: an implicit host conversion (``if x.max() > ...``) inside the
training step, and a call of a NumPy-only function. The fused CuPy kernels run through the
CUDA emulator (g++ / OpenMP), so the test skips without a C++ compiler.
"""
import dataclasses

import numpy as np
import pytest

from minispanbert import train as loop
from minispanbert.backend import to_numpy
from minispanbert.engine import kernels
from minispanbert.engine import trainer as train
from minispanbert.engine.check_gradients import CHECK_CONFIG, hand_batch
from minispanbert.engine.kernels import cuda as fused
from minispanbert.engine.runs.checkpoint import load_checkpoint, save_checkpoint
from minispanbert.finetune import qa_head
from minispanbert.keyed_random import KeyedRandom, dropout_random
from minispanbert.model.spanbert_loss import SpanBertForPretraining
from minispanbert.optim import adamw_init, clip_and_step, no_decay_mask

from cuda_emulator import compiler_missing_reason

EMULATOR_SKIP_REASON = compiler_missing_reason()
pytestmark = pytest.mark.skipif(EMULATOR_SKIP_REASON is not None, reason=f"{EMULATOR_SKIP_REASON}")

import strict_backend  # noqa: E402  (after the skip: it imports the emulator)
from strict_backend import ImplicitHostConversion, StrictArray, counting, xp  # noqa: E402

CONFIG = dataclasses.replace(CHECK_CONFIG, hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1)  # masks drawn too


@pytest.fixture(autouse=True)
def strict_device(monkeypatch):
    monkeypatch.setattr(fused, "MAX_ROW_BLOCK", 64)  # emulated blocks are OpenMP teams on two cores
    strict_backend.install_cupyx(monkeypatch)


def new_model():
    return SpanBertForPretraining.initialise(CONFIG, seed=0, xp=xp, dtype="float32")


def one_train_step(model, state, step=0):
    """The training step as the command runs it: the kernels installed (CUDA on the device)."""
    cfg = train.RunConfig(preset="tiny", dropout=0.1)
    with kernels.installed():
        return loop.train_step(model, hand_batch(), state, lr=1e-3, cfg=cfg, decay_mask=no_decay_mask(model.params),
                               dropout_rng=KeyedRandom([0, step], xp=xp))


def test_the_double_refuses_implicit_host_conversion_and_numpy_only_names():
    a = xp.asarray(np.arange(6.0).reshape(2, 3))
    for convert in (np.asarray, float, int, bool, lambda v: v.tolist(), lambda v: v.item(), np.exp, np.sum):
        with pytest.raises(ImplicitHostConversion):
            convert(a.sum() if convert in (float, int, bool) else a)
    with pytest.raises(ImplicitHostConversion):
        a + np.ones(3)  # a host array in device arithmetic, as CuPy refuses
    for numpy_only in ("fromiter", "asmatrix", "loadtxt", "char", "genfromtxt"):
        assert not hasattr(xp, numpy_only), numpy_only
    with counting() as copies:
        host = to_numpy(a * 2)
    assert isinstance(host, np.ndarray) and host[1, 2] == 10.0
    assert copies == {"host_to_device": 0, "device_to_host": 1}


def test_train_step_runs_on_the_device_and_makes_no_host_copy():
    model = new_model()
    assert all(isinstance(p, StrictArray) for p in model.params.values())
    state = adamw_init(model.params, xp=xp)
    before = {k: to_numpy(v) for k, v in model.params.items()}
    with counting() as copies:
        out, grad_norm = one_train_step(model, state)
    assert copies["device_to_host"] == 0, copies
    assert isinstance(out.loss, StrictArray) and isinstance(grad_norm, StrictArray)
    assert np.isfinite(to_numpy(out.loss)) and to_numpy(grad_norm) > 0
    moved = [k for k, v in model.params.items() if not np.array_equal(to_numpy(v), before[k])]
    assert len(moved) > len(before) // 2
    # the logging path reads the step's values back with ONE copy
    with counting() as copies:
        records = train.read_train_records([(0, 1e-3, out, grad_norm)], xp=xp, since=0.0, tokens_per_step=14)
    assert copies["device_to_host"] == 1 and np.isfinite(records[0]["loss"])


def test_the_device_draws_numpy_s_dropout_masks():
    """Dropout masks are drawn on the host, keyed (minispanbert/keyed_random.py), and copied: a float64
    forward and backward with dropout on equals NumPy's on the double, as on CuPy."""
    results = []
    for module in (np, xp):
        model = SpanBertForPretraining.initialise(CONFIG, seed=0, xp=module, dtype="float64")
        out, cache = model.forward(hand_batch(), train=True, rng=dropout_random(0, 4, xp=module))
        grads = model.backward(cache)
        results.append((to_numpy(out.loss), {name: to_numpy(g) for name, g in grads.items()}))
    (loss, grads), (device_loss, device_grads) = results
    assert loss != SpanBertForPretraining.initialise(CONFIG, seed=0, xp=np, dtype="float64").forward(
        hand_batch())[0].loss  # dropout was on
    np.testing.assert_allclose(device_loss, loss, rtol=1e-12)
    for name, grad in grads.items():
        np.testing.assert_allclose(device_grads[name], grad, rtol=1e-10, atol=1e-12, err_msg=name)


def test_evaluation_runs_on_the_device():
    metrics = train.evaluate(new_model(), [hand_batch(), hand_batch()])
    assert np.isfinite(metrics["mlm_loss"]) and 0 <= metrics["mlm_acc"] <= 1 and metrics["sbo_targets"] > 0


def test_qa_fine_tuning_step_runs_on_the_device():
    params = qa_head.init_qa_params(CHECK_CONFIG, 0, xp=xp)
    batch = hand_batch()
    arrays = dict(input_ids=batch.input_ids, token_type_ids=batch.token_type_ids, attention_mask=batch.attention_mask,
                  start_positions=np.array([1, 2]), end_positions=np.array([3, 2]))
    state = adamw_init(params, xp=xp)
    with counting() as copies, kernels.installed():
        out, cache = qa_head.qa_forward(params, arrays, CHECK_CONFIG, xp=xp, train=True, rng=KeyedRandom(1, xp=xp))
        grads = qa_head.qa_backward(cache, xp=xp)
        clip_and_step(params, grads, state, lr=1e-3, max_grad_norm=1.0, weight_decay=0.01,
                      decay_mask=no_decay_mask(params), xp=xp)
    assert copies["device_to_host"] == 0, copies
    assert np.isfinite(to_numpy(out.loss))


def test_checkpoint_round_trip_through_the_device(tmp_path):
    model = new_model()
    state = adamw_init(model.params, xp=xp)
    one_train_step(model, state)
    save_checkpoint(tmp_path / "ckpt", params=model.params, optimizer_state=state, step=1, config={"preset": "check"})
    loaded = load_checkpoint(tmp_path / "ckpt", xp=xp)
    assert all(isinstance(v, StrictArray) for v in loaded.params.values())
    for name, value in model.params.items():
        np.testing.assert_array_equal(to_numpy(loaded.params[name]), to_numpy(value))
    np.testing.assert_array_equal(to_numpy(loaded.optimizer_state.v["cls.predictions.bias"]),
                                  to_numpy(state.v["cls.predictions.bias"]))


def plant(monkeypatch, name, make_planted):
    """Replace the function ``name`` wherever minispanbert imported it with ``make_planted(real)``."""
    import sys

    real = None
    for module_name, module in list(sys.modules.items()):
        if module_name.startswith("minispanbert") and callable(getattr(module, name, None)):
            real = real or getattr(module, name)
            monkeypatch.setattr(module, name, make_planted(real))
    assert real is not None, name


def test_a_planted_implicit_host_conversion_in_the_training_step_is_caught(monkeypatch):
    def make_planted(real):
        def planted(x, *args, xp, **kwargs):
            if x.max() > 1e4:  # a "harmless" overflow guard: an implicit device -> host sync every call
                raise AssertionError("unreachable")
            return real(x, *args, xp=xp, **kwargs)
        return planted

    plant(monkeypatch, "layernorm_forward", make_planted)
    model = new_model()
    with pytest.raises(ImplicitHostConversion, match=r"bool\(\)"):
        one_train_step(model, adamw_init(model.params, xp=xp))


def test_a_planted_numpy_only_call_in_the_training_step_is_caught(monkeypatch):
    import minispanbert.optim as optim

    real = optim.clip_grad_norm

    def planted(grads, max_norm, *, xp):
        xp.fromiter((0.0 for _ in grads), dtype=float)  # NumPy has it, CuPy does not
        return real(grads, max_norm, xp=xp)

    monkeypatch.setattr(optim, "clip_grad_norm", planted)
    model = new_model()
    with pytest.raises(AttributeError, match="fromiter"):
        one_train_step(model, adamw_init(model.params, xp=xp))

    def planted_np(grads, max_norm, *, xp):
        np.sqrt(next(iter(grads.values())))  # np where xp was meant
        return real(grads, max_norm, xp=xp)

    monkeypatch.setattr(optim, "clip_grad_norm", planted_np)
    with pytest.raises(ImplicitHostConversion, match="np.sqrt"):
        one_train_step(model, adamw_init(model.params, xp=xp))
