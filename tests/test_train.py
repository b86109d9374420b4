"""The pretraining CLI end to end on tiny data: overfitting one batch, bit-identical resume,
outputs written, and one-line errors for bad input."""
import importlib.util
import json
import math

import numpy as np
import pytest

from minispanbert import train
from minispanbert.train import TrainConfig, batch_indices, run

WORDS = ("the cat sat on a mat while dogs barked loudly at passing cars and people walked home "
         "slowly through heavy rain under grey skies near old stone bridges").split()


@pytest.fixture
def corpus(tmp_path):
    rng = np.random.default_rng(0)
    docs = []
    for _ in range(30):
        lines = [" ".join(rng.choice(WORDS, size=rng.integers(5, 20))) + " ." for _ in range(5)]
        docs.append("\n".join(lines))
    path = tmp_path / "corpus.txt"
    path.write_text("\n\n".join(docs) + "\n", encoding="utf-8")
    return path


def tiny_run(corpus, out, **overrides):
    cfg = dict(data=str(corpus), out=str(out), steps=6, batch_size=4, seq_len=32, eval_every=3, save_every=3,
               eval_batches=2)
    cfg.update(overrides)
    return run(TrainConfig(**cfg), log=lambda _msg: None)


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
    for name in ("model.safetensors", "optimizer.safetensors", "trainer_state.json", "tokenizer.json",
                 "metrics.jsonl", "loss.png"):
        assert (out / name).is_file(), name
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

    cut = TrainConfig(data=str(corpus), out=str(tmp_path / "cut"), steps=6, batch_size=4, seq_len=32,
                      eval_every=3, save_every=3, eval_batches=2, dtype="float64")
    real_save = train.save_checkpoint

    def save_then_stop(*args, **kwargs):
        real_save(*args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(train, "save_checkpoint", save_then_stop)
    with pytest.raises(KeyboardInterrupt):
        run(cut, log=lambda _m: None)
    monkeypatch.setattr(train, "save_checkpoint", real_save)
    resumed = run(TrainConfig(**{**cut.__dict__, "resume": cut.out}), log=lambda _m: None)
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
    extended = tiny_run(corpus, out, resume=str(out), steps=7, save_every=7)
    assert len(extended["train_losses"]) == 3
    assert [r["step"] for r in read_metrics(out / "metrics.jsonl") if r["split"] == "train"] == list(range(1, 8))


def test_batch_order_is_a_fresh_permutation_each_epoch():
    cfg = TrainConfig(batch_size=4)
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
    before = (out / "model.safetensors").read_bytes()
    real_forward = train.SpanBertForPretraining.forward

    def poisoned(self, batch, **kwargs):
        result, cache = real_forward(self, batch, **kwargs)
        if kwargs.get("train"):
            result.loss = result.loss * np.nan
        return result, cache

    monkeypatch.setattr(train.SpanBertForPretraining, "forward", poisoned)
    with pytest.raises(ValueError, match="loss became nan at step 0"):
        tiny_run(corpus, out, steps=6, save_every=3)
    assert (out / "model.safetensors").read_bytes() == before


def test_main_turns_errors_into_one_line_exit(corpus, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        train.main(["--data", str(corpus), "--out", str(tmp_path / "x"), "--seq-len", "4096"])
    assert str(exc.value).startswith("error: --seq-len 4096 is outside")
    assert "\n" not in str(exc.value)
