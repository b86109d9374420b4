"""The pretraining CLI end to end on tiny data: overfitting one batch, bit-identical resume,
outputs written, one-line errors for bad input, a train step that never reads the device, and
--log-every: the same metrics, one copy per read-back, and a nan stopped before it is saved."""
import importlib.util
import json
import math
from types import SimpleNamespace

import numpy as np
import pytest

from minispanbert import train as loop
from minispanbert.engine import trainer as train
from minispanbert.engine.runs.checkpoint import load_checkpoint
from minispanbert.engine.trainer import RunConfig, run
from minispanbert.model.spanbert_loss import SpanBertForPretraining
from minispanbert.optim import adamw_init
from minispanbert.train import batch_indices, train_step

from micro_runs import write_corpus


@pytest.fixture
def corpus(tmp_path):
    return write_corpus(tmp_path / "corpus.txt", documents=30, lines=5, words_per_line=(5, 20))


def tiny_run(corpus, out, **overrides):
    cfg = dict(data=str(corpus), out=str(out), steps=6, batch_size=4, seq_len=32, eval_every=3, save_every=3,
               eval_batches=2, print_every=1000)
    cfg.update(overrides)
    return run(RunConfig(**cfg), log=lambda _msg: None)


def read_metrics(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_overfit_single_batch_drives_mlm_plus_sbo_below_0_05(corpus, tmp_path):
    result = tiny_run(corpus, tmp_path / "of", steps=120, overfit_batch=True, lr=3e-3, eval_every=1000)
    losses = result["train_losses"]
    assert losses[0] > 2 * math.log(8192) - 1  # starts near ln V for each of the two objectives
    assert min(losses[-10:]) < 0.05


def test_outputs_written(corpus, tmp_path):
    out = tmp_path / "run"
    tiny_run(corpus, out)
    assert sorted(p.name for p in out.iterdir()) == ["checkpoints", "loss.png", "metrics.jsonl"]
    assert (out / "checkpoints" / "latest").read_text() == "step-000006\n"
    for step in (3, 6):
        for name in ("model.safetensors", "optimizer.safetensors", "trainer_state.json", "tokenizer.json"):
            assert (out / "checkpoints" / f"step-{step:06d}" / name).is_file(), name
    records = read_metrics(out / "metrics.jsonl")
    assert [r["step"] for r in records if r["split"] == "train"] == [1, 2, 3, 4, 5, 6]
    valid = [r for r in records if r["split"] == "valid"]
    assert [r["step"] for r in valid] == [3, 6]
    assert {"mlm_loss", "mlm_acc", "sbo_loss", "sbo_acc", "baseline_acc"} <= set(valid[0])
    assert (out / "loss.png").stat().st_size > 10_000  # a real plot, not an empty canvas


def test_resume_is_bit_identical_float64(corpus, tmp_path, monkeypatch):
    """6 straight steps == 3 steps, an interruption right after the step-3 checkpoint, and a resume."""
    straight = tiny_run(corpus, tmp_path / "straight", dtype="float64", save_every=100)["train_losses"]
    assert tiny_run(corpus, tmp_path / "again", dtype="float64")["train_losses"] == straight  # deterministic

    cut = RunConfig(data=str(corpus), out=str(tmp_path / "cut"), steps=6, batch_size=4, seq_len=32,
                      eval_every=3, save_every=3, eval_batches=2, dtype="float64")
    real_save = train.save_checkpoint

    def save_then_stop(*args, **kwargs):
        real_save(*args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(train, "save_checkpoint", save_then_stop)
    with pytest.raises(KeyboardInterrupt):
        run(cut, log=lambda _m: None)
    monkeypatch.setattr(train, "save_checkpoint", real_save)
    resumed = run(RunConfig(**{**cut.__dict__, "resume": cut.out}), log=lambda _m: None)
    assert resumed["train_losses"] == straight[3:]  # exact equality: bit-identical
    logged = [r["loss"] for r in read_metrics(tmp_path / "cut" / "metrics.jsonl") if r["split"] == "train"]
    assert logged == straight


def test_resume_with_different_settings_is_refused(corpus, tmp_path):
    out = tmp_path / "run"
    tiny_run(corpus, out)
    with pytest.raises(ValueError, match="batch_size"):
        tiny_run(corpus, out, resume=str(out), batch_size=8, steps=8)
    with pytest.raises(ValueError, match="already at step 6"):
        tiny_run(corpus, out, resume=str(out), steps=6)


def test_resume_can_extend_training(corpus, tmp_path):
    out = tmp_path / "run"
    tiny_run(corpus, out, steps=4, save_every=4)
    extended = tiny_run(corpus, out, resume=str(out), steps=7, save_every=7, log_every=2)  # --log-every may change
    assert len(extended["train_losses"]) == 3
    assert [r["step"] for r in read_metrics(out / "metrics.jsonl") if r["split"] == "train"] == list(range(1, 8))


def test_batch_order_is_a_fresh_permutation_each_epoch():
    cfg = RunConfig(batch_size=4)
    epoch0 = np.concatenate([batch_indices(s, 10, cfg) for s in range(2)])
    epoch1 = np.concatenate([batch_indices(s, 10, cfg) for s in range(2, 4)])
    assert len(set(epoch0)) == 8 and len(set(epoch1)) == 8
    assert not np.array_equal(epoch0, epoch1)


@pytest.mark.parametrize("overrides,message", [
    (dict(seq_len=512), "outside .3, 128. for preset 'tiny'"),
    (dict(preset="huge"), "unknown preset"),
    (dict(masking="random"), "unknown masking scheme"),
    (dict(backend="tpu"), "unknown backend"),
    (dict(batch_size=1000), "fewer than --batch-size"),
    (dict(steps=0), "--steps must be at least 1"),
    (dict(log_every=0), "--log-every must be at least 1"),
])
def test_bad_settings_are_one_line_errors(corpus, tmp_path, overrides, message):
    with pytest.raises(ValueError, match=message):
        tiny_run(corpus, tmp_path / "bad", **overrides)


def test_cupy_without_cupy_is_a_clear_error(corpus, tmp_path):
    if importlib.util.find_spec("cupy") is not None:
        pytest.skip("CuPy is installed here")
    with pytest.raises(ValueError, match="--backend numpy"):
        tiny_run(corpus, tmp_path / "gpu", backend="cupy")


def test_empty_corpus_and_bad_bytes(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n", encoding="utf-8")
    with pytest.raises(ValueError, match="empty"):
        tiny_run(empty, tmp_path / "a")
    binary = tmp_path / "binary.txt"
    binary.write_bytes(b"hello \xff\xfe world\n")
    with pytest.raises(ValueError, match="UTF-8"):
        tiny_run(binary, tmp_path / "b")


def test_unwritable_output_folder(corpus, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(ValueError, match="not writable"):
        tiny_run(corpus, blocker / "run")


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(corpus, tmp_path, monkeypatch):
    out = tmp_path / "run"
    tiny_run(corpus, out, steps=6, save_every=3)
    before = {p.relative_to(out): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}
    real_forward = SpanBertForPretraining.forward

    def poisoned(self, batch, **kwargs):
        result, cache = real_forward(self, batch, **kwargs)
        if kwargs.get("train"):
            result.loss = result.loss * np.nan
        return result, cache

    monkeypatch.setattr(SpanBertForPretraining, "forward", poisoned)
    with pytest.raises(ValueError, match="loss became nan at step 1; no checkpoint was written yet"):
        tiny_run(corpus, out, steps=6, save_every=3, overwrite=True, threads=1)  # a new run meant to replace the old one
    assert {p.relative_to(out): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()} == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # its staging folder is gone


class UnreadableLoss:
    """Stands in for a device scalar: reading it on the host (float, bool, isfinite) fails the test."""

    def __float__(self):
        raise AssertionError("train_step read the loss back to the host")

    __bool__ = __float__


def test_train_step_never_reads_the_loss_back():
    params = {"dense.weight": np.ones(3)}
    model = SimpleNamespace(xp=np, params=params,
                            forward=lambda batch, train, rng: (SimpleNamespace(loss=UnreadableLoss()), "cache"),
                            backward=lambda cache: {"dense.weight": np.array([3.0, 0.0, 4.0])})
    out, grad_norm = train_step(model, None, adamw_init(params, xp=np), lr=0.1, cfg=RunConfig(max_grad_norm=1.0),
                                decay_mask=None, dropout_rng=None)
    assert isinstance(out.loss, UnreadableLoss)
    assert isinstance(grad_norm, np.ndarray) and grad_norm.ndim == 0 and grad_norm == 5.0  # the norm before clipping
    assert not np.array_equal(params["dense.weight"], np.ones(3))  # the update was applied


@pytest.mark.parametrize("poison,message", [
    ("forward", r"the loss became nan at step 7; the last good checkpoint in \S+ \(step 4\) is kept: lower --lr"),
    ("backward", r"the gradient norm became nan at step 7; the last good checkpoint in \S+ \(step 4\) is kept"),
], ids=["loss", "gradient"])
def test_nan_in_the_middle_of_a_log_interval_names_its_step_and_is_never_saved(corpus, tmp_path, monkeypatch,
                                                                                 poison, message):
    """--log-every 5 with saves every 4 steps reads back at steps 4 (save), 5 (log), 8 (save) and 10,
    so steps 6-8 are read together just before the step-8 save, which is not a log step. Step 7
    alone is poisoned: in its loss, or in a gradient (which turns every weight nan)."""
    out, train_calls, saved = tmp_path / "run", [], {}
    real = getattr(SpanBertForPretraining, poison)
    real_save = train.save_checkpoint

    def poisoned(self, *args, **kwargs):
        result = real(self, *args, **kwargs)
        if poison == "forward" and not kwargs.get("train"):
            return result  # an evaluation batch
        train_calls.append(None)
        if len(train_calls) == 7:
            if poison == "forward":
                result[0].loss = result[0].loss * np.nan
            else:
                next(iter(result.values())).fill(np.nan)
        return result

    def save_and_keep(directory, **kwargs):
        folder = real_save(directory, **kwargs)
        saved[kwargs["step"]] = (folder / "model.safetensors").read_bytes()
        return folder

    monkeypatch.setattr(SpanBertForPretraining, poison, poisoned)
    monkeypatch.setattr(train, "save_checkpoint", save_and_keep)
    with pytest.raises(ValueError, match=message) as exc:
        tiny_run(corpus, out, steps=10, save_every=4, eval_every=100, log_every=5, threads=1)  # one forward a step
    assert "\n" not in str(exc.value)
    assert len(train_calls) == 8  # steps 7 and 8 ran before the read-back caught step 7
    assert list(saved) == [4]  # the read-back before the step-8 save stopped the run
    assert (out / "checkpoints" / "step-000004" / "model.safetensors").read_bytes() == saved[4]
    checkpoint = load_checkpoint(out, xp=np)
    assert checkpoint.step == 4 and all(np.isfinite(w).all() for w in checkpoint.params.values())
    assert [r["step"] for r in read_metrics(out / "metrics.jsonl") if r["split"] == "train"] == list(range(1, 7))


def test_metrics_do_not_depend_on_log_every(corpus, tmp_path, monkeypatch):
    """Reading back every 3 steps logs exactly the values of reading back every step, and does it
    with one device -> host copy per read: at steps 3, 6 and 7 (the last) instead of 7 times (plus
    the one copy of the final evaluation)."""
    copies = []
    real_to_numpy = train.to_numpy

    def counted_to_numpy(array):
        copies.append(array.shape)
        return real_to_numpy(array)

    monkeypatch.setattr(train, "to_numpy", counted_to_numpy)  # the training values' read-back
    monkeypatch.setattr(loop, "to_numpy", counted_to_numpy)  # the evaluation sums' (minispanbert/train.py)
    runs = {}
    for log_every in (1, 3):
        copies.clear()
        tiny_run(corpus, tmp_path / str(log_every), steps=7, eval_every=100, save_every=100, log_every=log_every,
                 dtype="float64")
        runs[log_every] = [{k: v for k, v in r.items() if k != "tokens_per_s"}
                           for r in read_metrics(tmp_path / str(log_every) / "metrics.jsonl")]
        # one copy per read-back of the training values, then one for the final evaluation's sums
        # (MLM and SBO: loss x count and correct, read together)
        assert copies == ([(4,)] * 7 if log_every == 1 else [(12,), (12,), (4,)]) + [(4,)]
    assert [r["step"] for r in runs[1] if r["split"] == "train"] == list(range(1, 8))
    assert runs[3] == runs[1]  # every loss, grad norm and lr exactly equal, and the final evaluation too


def test_main_turns_errors_into_one_line_exit(corpus, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        train.main(["--data", str(corpus), "--out", str(tmp_path / "x"), "--seq-len", "4096"])
    assert str(exc.value).startswith("error: --seq-len 4096 is outside")
    assert "\n" not in str(exc.value)
