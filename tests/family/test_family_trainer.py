"""``python -m minispanbert.train --objective {bert,roberta,albert}``: each objective overfits one
batch (loss < 0.05) on a micro model, metrics name its heads, a resumed run refuses another
objective, and incompatible flags or a one-document corpus stop with one line."""
import json

import pytest

from minispanbert import config as config_module
from minispanbert.config import ModelConfig
from minispanbert.engine import trainer as train
from minispanbert.engine.trainer import RunConfig

from micro_runs import WORDS, write_corpus

MICRO = ModelConfig(vocab_size=320, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                    intermediate_size=64, max_position_embeddings=32)


@pytest.fixture
def micro(monkeypatch):
    """A ``micro`` preset, small enough to overfit a batch in a few seconds."""
    monkeypatch.setitem(config_module.PRESETS, "micro", MICRO)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_corpus(tmp_path_factory.mktemp("corpus") / "corpus.txt", documents=12, lines=6, words_per_line=(4, 10))


@pytest.mark.parametrize("objective, steps, lr", [("bert", 160, 5e-3), ("roberta", 160, 5e-3),
                                                ("albert", 260, 1e-2)])  # E = 8 and one shared layer learn slower
def test_overfit_batch_drives_the_loss_below_005(objective, steps, lr, micro, corpus, tmp_path):
    cfg = RunConfig(objective=objective, preset="micro", data=str(corpus), out=str(tmp_path / "run"), steps=steps,
                      batch_size=4, seq_len=24, lr=lr, warmup=10, overfit_batch=True, eval_every=steps,
                      save_every=steps, eval_batches=1, weight_decay=0.0)
    result = train.run(cfg, log=lambda _msg: None)
    losses = result["train_losses"]
    assert losses[0] > 4.0 and losses[-1] < 0.05, (losses[0], losses[-1])
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    heads = {"bert": ("mlm", "nsp"), "roberta": ("mlm",), "albert": ("mlm", "sop")}[objective]
    train_record = records[0]
    assert all(f"{h}_loss" in train_record for h in heads) and "sbo_loss" not in train_record
    assert train_record["loss"] == pytest.approx(sum(train_record[f"{h}_loss"] for h in heads), rel=1e-5)


def test_resume_refuses_another_objective(micro, corpus, tmp_path):
    common = dict(preset="micro", data=str(corpus), steps=2, batch_size=4, seq_len=24, eval_every=2, save_every=2)
    train.run(RunConfig(objective="bert", out=str(tmp_path / "run"), **common), log=lambda _msg: None)
    with pytest.raises(ValueError, match="objective"):
        train.run(RunConfig(objective="albert", resume=str(tmp_path / "run"), **{**common, "steps": 4}),
                  log=lambda _msg: None)


@pytest.mark.parametrize("argv, message", [
    (["--objective", "albert", "--masking", "span"], "--masking span is not available with --objective albert"),
    (["--objective", "bert", "--masking", "ngram"], "--masking ngram is not available with --objective bert"),
    (["--objective", "spanbert", "--masking", "ngram"], "--masking ngram is not available with --objective spanbert"),
    (["--objective", "roberta", "--sbo-weight", "0"], "--sbo-weight applies to --objective spanbert only"),
    (["--objective", "electro"], "invalid choice"),
])
def test_incompatible_flags_stop_with_one_line(argv, message, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        train.main([*argv, "--out", str(tmp_path / "run"), "--steps", "1"])
    text = str(exc.value.code) if exc.value.code not in (None, 0, 1, 2) else capsys.readouterr().err.strip()
    assert message in text and text.startswith(("error:", "usage:")) and "Traceback" not in text
    assert len(text.strip().splitlines()) == 1, text
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("objective", ["bert", "albert"])
def test_single_document_corpus_stops_pair_objectives(objective, micro, tmp_path):
    single = tmp_path / "one.txt"
    single.write_text("\n".join(" ".join(WORDS[i:i + 6]) + " ." for i in range(20)) + "\n", encoding="utf-8")
    with pytest.raises(SystemExit) as exc:
        train.main(["--objective", objective, "--preset", "micro", "--data", str(single), "--out",
                    str(tmp_path / "run"), "--steps", "1", "--batch-size", "2", "--seq-len", "24"])
    message = str(exc.value.code)
    assert message.startswith("error: ") and "at least two documents" in message and "\n" not in message


@pytest.mark.parametrize("objective, betas, eps", [
    ("roberta", (0.9, 0.98), 1e-6),   # RoBERTa §3.1: "beta2 = 0.98 ... epsilon ... 1e-6"
    ("electra", (0.9, 0.999), 1e-6),  # ELECTRA's AdamWeightDecayOptimizer: epsilon=1e-6
    ("bert", (0.9, 0.999), 1e-8),     # BERT §A.2: beta1 = 0.9, beta2 = 0.999 (torch's eps 1e-8)
])
def test_each_objective_steps_adam_with_its_own_betas_and_eps(objective, betas, eps, micro, corpus, tmp_path,
                                                             monkeypatch):
    """The command hands the optimizer step the objective's Adam settings, as its paper states them."""
    from minispanbert import train as loop

    seen = []
    real = loop.train_step

    def recording_step(*args, **kwargs):
        seen.append((kwargs["betas"], kwargs["eps"]))
        return real(*args, **kwargs)

    monkeypatch.setattr(loop, "train_step", recording_step)
    train.run(RunConfig(objective=objective, preset="micro", data=str(corpus), out=str(tmp_path / "run"), steps=2,
                        batch_size=2, seq_len=24, eval_every=2, save_every=2, eval_batches=1), log=lambda _msg: None)
    assert seen and all(b == betas and e == eps for b, e in seen), seen
