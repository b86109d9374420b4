"""Extractive-QA fine-tuning: float64 gradient checks of the span head and of the whole QA model,
the loss against a hand computation, loading a pretraining checkpoint (heads dropped), an end-to-end
fine-tune that overfits five hand-written questions to EM = F1 = 100 through decoding and the
official metric, the dev-split-by-article mode, and one-line CLI errors."""
import dataclasses
import json
import math
import shutil

import numpy as np
import pytest

from minispanbert.config import ModelConfig
from minispanbert.data import train_tokenizer
from minispanbert.engine.check_gradients import CHECK_CONFIG as TINY
from minispanbert.engine.check_gradients import KEY_BIASES, MODEL_TOLERANCE, OP_TOLERANCE, encoder_inputs
from minispanbert.engine.runs.checkpoint import load_checkpoint, resolve_checkpoint, save_checkpoint
from minispanbert.engine.trainer import RunConfig
from minispanbert.engine.trainer import run as pretrain
from minispanbert.finetune.evaluate_qa import main as evaluate_qa_main
from minispanbert.finetune.loop import FinetuneConfig, model_setup
from minispanbert.finetune.qa_head import (
    QA_BIAS,
    QA_WEIGHT,
    init_qa_params,
    qa_backward,
    qa_forward,
    qa_head_backward,
    qa_head_forward,
    qa_params_from_pretrained,
)
from minispanbert.finetune_qa import main as finetune_main
from minispanbert.gradcheck import check_param_gradients, format_errors, numerical_gradient, rel_error
from minispanbert.layers.cross_entropy import IGNORE_INDEX
from minispanbert.model.spanbert_loss import init_pretraining_params

# Five questions about three articles; q1 has two gold answers (the official metric takes the max).
ARTICLES = [
    ("Amazon", "The Amazon River flows through Brazil and Peru. It is the largest river by discharge volume.",
     [("q1", "Which countries does the Amazon flow through?", ["Brazil and Peru", "Brazil"]),
      ("q2", "By what is the Amazon the largest river?", ["discharge volume"])]),
    ("Paris", "Paris is the capital of France. The Eiffel Tower was completed in 1889 for a world fair.",
     [("q3", "What is the capital of France?", ["Paris"]),
      ("q4", "When was the Eiffel Tower completed?", ["1889"])]),
    ("Beethoven", "Ludwig van Beethoven was born in Bonn in 1770 and composed nine symphonies.",
     [("q5", "Where was Beethoven born?", ["Bonn"])]),
]
GOLD = {qid: answers[0] for _, _, qas in ARTICLES for qid, _, answers in qas}


def squad_json():
    return {"version": "1.1", "data": [
        {"title": title, "paragraphs": [{"context": context, "qas": [
            {"id": qid, "question": question,
             "answers": [{"text": text, "answer_start": context.index(text)} for text in answers]}
            for qid, question, answers in qas]}]}
        for title, context, qas in ARTICLES]}


def qa_arrays(rng, start, end, B=3, T=6):
    ids, types, mask = encoder_inputs(rng, B=B, T=T)
    return dict(input_ids=ids, token_type_ids=types, attention_mask=mask,
                start_positions=np.array(start), end_positions=np.array(end))


def scaled_qa_params(seed):
    """float64 TINY QA parameters with weights x10 so that every gradient is far from zero."""
    params = init_qa_params(TINY, seed, xp=np, dtype="float64")
    return {k: v * 10 if k.endswith(".weight") and "LayerNorm" not in k else v for k, v in params.items()}


# --------------------------------------------------------------------------- head, loss, gradients


def test_qa_head_gradients_float64_params_and_input():
    rng = np.random.default_rng(0)
    params = {QA_WEIGHT: rng.normal(size=(2, 5)), QA_BIAS: rng.normal(size=2)}
    h = rng.normal(size=(3, 4, 5))
    dstart, dend = rng.normal(size=(3, 4)), rng.normal(size=(3, 4))
    start, end, cache = qa_head_forward(params, h, xp=np)
    np.testing.assert_allclose(start, h @ params[QA_WEIGHT][0] + params[QA_BIAS][0], rtol=1e-13)
    np.testing.assert_allclose(end, h @ params[QA_WEIGHT][1] + params[QA_BIAS][1], rtol=1e-13)
    dh, grads = qa_head_backward(dstart, dend, cache, xp=np)

    def fake_loss():  # <start, dstart> + <end, dend>
        s, e, _ = qa_head_forward(params, h, xp=np)
        return np.sum(s * dstart) + np.sum(e * dend)

    for name, value in params.items():
        assert rel_error(grads[name], numerical_gradient(fake_loss, value)) < OP_TOLERANCE, name
    assert rel_error(dh, numerical_gradient(fake_loss, h)) < OP_TOLERANCE


def _hand_cross_entropy(logits_row, label):
    m = max(logits_row)
    log_sum = m + math.log(math.fsum(math.exp(z - m) for z in logits_row))
    return log_sum - logits_row[label]


def test_loss_is_mean_of_start_and_end_cross_entropy_over_all_positions():
    """Hand-computed (CE_start + CE_end) / 2: the softmax runs over all T positions, padding
    included (as the authors' code); a start label >= T is ignored (their clamp-to-T trick) and
    IGNORE_INDEX too, so each CE averages over its own counted rows."""
    rng = np.random.default_rng(1)
    params = scaled_qa_params(1)
    arrays = qa_arrays(rng, start=[2, 6, 1], end=[3, 0, IGNORE_INDEX])  # row 1 is padded at 4, 5
    out, _ = qa_forward(params, arrays, TINY, xp=np)
    s, e = out.start_logits.tolist(), out.end_logits.tolist()
    start_ce = (_hand_cross_entropy(s[0], 2) + _hand_cross_entropy(s[2], 1)) / 2  # row 1: 6 >= T, ignored
    end_ce = (_hand_cross_entropy(e[0], 3) + _hand_cross_entropy(e[1], 0)) / 2    # row 2: IGNORE_INDEX
    assert float(out.start_loss) == pytest.approx(start_ce, rel=1e-12)
    assert float(out.end_loss) == pytest.approx(end_ce, rel=1e-12)
    assert float(out.loss) == pytest.approx((start_ce + end_ce) / 2, rel=1e-12)


def test_whole_qa_model_gradients_float64_every_parameter():
    rng = np.random.default_rng(2)
    params = scaled_qa_params(2)
    arrays = qa_arrays(rng, start=[2, 1, 0], end=[4, 3, 0])
    out, cache = qa_forward(params, arrays, TINY, xp=np)
    grads = qa_backward(cache, xp=np)
    assert set(grads) == set(params)

    def loss():
        return float(qa_forward(params, arrays, TINY, xp=np)[0].loss)

    errors = check_param_gradients(loss, params, grads)
    # Exactly-zero true gradients, checked absolutely: a softmax ignores a constant added to its row,
    # so neither the attention key bias nor anything that shifts every position's logit alike (the
    # head bias, and the last LayerNorm bias, which adds W beta to every position) can change the loss.
    last_ln_bias = f"bert.encoder.layer.{TINY.num_hidden_layers - 1}.output.LayerNorm.bias"
    for name in KEY_BIASES | {QA_BIAS, last_ln_bias}:
        assert np.max(np.abs(grads[name])) < 1e-10, name
        assert np.max(np.abs(numerical_gradient(loss, params[name]))) < 1e-7, name
        errors.pop(name)
    assert max(errors.values()) < MODEL_TOLERANCE, format_errors(errors)
    assert np.all(np.abs(grads[QA_WEIGHT]) > 0)


def test_inference_batch_has_no_loss_and_cannot_be_backpropagated():
    rng = np.random.default_rng(3)
    arrays = qa_arrays(rng, start=[0, 0, 0], end=[0, 0, 0])
    del arrays["start_positions"], arrays["end_positions"]
    out, cache = qa_forward(scaled_qa_params(3), arrays, TINY, xp=np)
    assert out.loss is None and out.start_logits.shape == (3, 6)
    with pytest.raises(ValueError, match="start_positions and end_positions"):
        qa_backward(cache, xp=np)


def test_negative_positions_other_than_ignore_index_are_refused():
    rng = np.random.default_rng(4)
    with pytest.raises(ValueError, match="negative positions"):
        qa_forward(scaled_qa_params(4), qa_arrays(rng, start=[0, -1, 0], end=[0, 0, 0]), TINY, xp=np)


def test_pretrained_encoder_is_kept_and_pretraining_heads_dropped():
    pretrained = init_pretraining_params(TINY, 7, xp=np, dtype="float32")
    params, dropped = qa_params_from_pretrained(pretrained, TINY, 0, xp=np, dtype="float64")
    assert not any(name.startswith("cls.") for name in params)
    assert dropped == sorted(name for name in pretrained if name.startswith("cls."))
    encoder_names = [name for name in params if name.startswith("bert.")]
    assert set(params) == set(encoder_names) | {QA_WEIGHT, QA_BIAS}
    for name in encoder_names:
        assert params[name].dtype == np.float64
        np.testing.assert_array_equal(params[name], pretrained[name].astype(np.float64))
    fresh = init_qa_params(TINY, 0, xp=np, dtype="float64")
    np.testing.assert_array_equal(params[QA_WEIGHT], fresh[QA_WEIGHT])

    del pretrained["bert.encoder.layer.1.output.dense.weight"]
    with pytest.raises(ValueError, match="lack 1 encoder tensors"):
        qa_params_from_pretrained(pretrained, TINY, 0, xp=np)
    with pytest.raises(ValueError, match="has shape"):
        qa_params_from_pretrained(init_pretraining_params(TINY.replace(hidden_size=4), 0, xp=np), TINY, 0, xp=np)


# --------------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def pretrained_dir(tmp_path_factory):
    """A real (2-step) tiny-preset pretraining checkpoint whose tokenizer knows the questions' words."""
    root = tmp_path_factory.mktemp("pretrain")
    rng = np.random.default_rng(0)
    sentences = [s.strip() + " ." for _, context, qas in ARTICLES for s in context.split(".") if s.strip()]
    sentences += [question for _, _, qas in ARTICLES for _, question, _ in qas]
    documents = ["\n".join(rng.permutation(sentences)) for _ in range(12)]
    corpus = root / "corpus.txt"
    corpus.write_text("\n\n".join(documents) + "\n", encoding="utf-8")
    out = root / "ckpt"
    pretrain(RunConfig(data=str(corpus), out=str(out), steps=2, batch_size=4, seq_len=32, eval_every=2,
                         save_every=2, eval_batches=1), log=lambda _m: None)
    return out


@pytest.fixture(scope="module")
def small_checkpoint(tmp_path_factory):
    """A checkpoint in the pretraining format with a much smaller model than the tiny preset (random
    weights, a tokenizer trained on the questions' text), so that overfitting takes a few seconds."""
    out = tmp_path_factory.mktemp("small") / "ckpt"
    texts = [context for _, context, _ in ARTICLES] + [q for _, _, qas in ARTICLES for _, q, _ in qas]
    tokenizer = train_tokenizer(texts, 300)
    config = ModelConfig(vocab_size=tokenizer.get_vocab_size(), hidden_size=32, num_hidden_layers=2,
                         num_attention_heads=2, intermediate_size=64, max_position_embeddings=64,
                         sbo_position_dim=8)
    save_checkpoint(out, params=init_pretraining_params(config, 0, xp=np), step=0, config={"model": config.to_dict()},
                    files={"tokenizer.json": tokenizer.to_str()})
    return out


@pytest.fixture
def squad_file(tmp_path):
    path = tmp_path / "squad.json"
    path.write_text(json.dumps(squad_json()), encoding="utf-8")
    return path


SMALL_WINDOWS = ["--max-seq-len", "64", "--max-query-len", "16", "--doc-stride", "32"]


def test_fine_tune_overfits_five_questions_to_em_and_f1_100(small_checkpoint, squad_file, tmp_path, capsys):
    out = tmp_path / "qa"
    result = finetune_main(["--checkpoint", str(small_checkpoint), "--train", str(squad_file), "--dev", str(squad_file),
                            "--out", str(out), "--steps", "120", "--batch-size", "5", "--lr", "5e-3",
                            "--dropout", "0", *SMALL_WINDOWS])
    assert result["scores"] == {"dev": {"exact_match": 100.0, "f1": 100.0}}
    assert result["train_losses"][-1] < 0.05 * result["train_losses"][0]
    assert json.loads((out / "predictions.json").read_text()) == GOLD  # official format, text cut from context
    assert 'dev: {"exact_match": 100.0, "f1": 100.0}' in capsys.readouterr().out

    saved = load_checkpoint(out, xp=np)  # fine-tuned weights: encoder + QA head, no pretraining heads
    assert QA_WEIGHT in saved.params and not any(name.startswith("cls.") for name in saved.params)
    assert saved.config["finetune"]["steps"] == 120 and saved.step == 120
    assert (saved.directory / "tokenizer.json").is_file() and (out / "finetune.png").is_file()
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if r["split"] == "train"] == list(range(1, 121))
    assert records[-1] == {"split": "dev", "step": 120, "examples": 5, "exact_match": 100.0, "f1": 100.0}


def test_split_dev_by_article_trains_and_evaluates_on_disjoint_articles(pretrained_dir, squad_file, tmp_path,
                                                                        capsys):
    out = tmp_path / "split"
    finetune_main(["--checkpoint", str(pretrained_dir), "--dev", str(squad_file), "--split-dev-by-article", "0.34",
                   "--out", str(out), "--steps", "2", "--eval-every", "1", *SMALL_WINDOWS])
    printed = capsys.readouterr().out
    assert "step 1/2 dev split: {" in printed and "\ndev split: {" in printed
    predicted = set(json.loads((out / "predictions.json").read_text()))
    heldout_articles = [qas for _, _, qas in ARTICLES if {qid for qid, _, _ in qas} == predicted]
    assert len(heldout_articles) == 1  # exactly the questions of one whole article (1 of 3 = 0.34)
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if r["split"] == "dev split"] == [1, 2]
    # gold.json holds exactly the held-out questions, so evaluate_qa rescores the split as the run did
    gold = json.loads((out / "gold.json").read_text())
    assert {qa["id"] for a in gold["data"] for p in a["paragraphs"] for qa in p["qas"]} == predicted
    scores = evaluate_qa_main([str(out / "gold.json"), str(out / "predictions.json")])
    assert scores == pytest.approx({k: v for k, v in records[-1].items() if k in ("exact_match", "f1")})


def test_random_init_keeps_config_and_tokenizer_but_not_the_weights(pretrained_dir, squad_file):
    cfg = FinetuneConfig(task="squad", checkpoint=str(pretrained_dir), dev=str(squad_file), train=str(squad_file))
    pretrained, model_config, _, _, _ = model_setup(cfg, np)
    random, _, _, _, unused = model_setup(dataclasses.replace(cfg, random_init=True), np)
    checkpoint = load_checkpoint(pretrained_dir, xp=np)
    word = "bert.embeddings.word_embeddings.weight"
    np.testing.assert_array_equal(pretrained[word], checkpoint.params[word])
    assert not np.allclose(random[word], checkpoint.params[word])
    np.testing.assert_array_equal(random[QA_WEIGHT], pretrained[QA_WEIGHT])  # same head: only the encoder differs
    assert model_config.hidden_dropout_prob == 0.1  # dropout per the checkpoint's config
    assert unused == sorted(checkpoint.params)


# --------------------------------------------------------------------------- CLI errors


def _cli_error(argv):
    with pytest.raises(SystemExit) as exc:
        finetune_main(argv)
    message = str(exc.value.code)
    assert message.startswith("error: ") and "\n" not in message
    return message


def _without(pretrained_dir, tmp_path, name):
    copy = tmp_path / f"no-{name}"
    shutil.copytree(pretrained_dir, copy)
    (resolve_checkpoint(copy) / name).unlink()
    return copy


@pytest.mark.parametrize("missing", ["tokenizer.json", "model.safetensors"])
def test_incomplete_checkpoint_names_the_missing_file(pretrained_dir, squad_file, tmp_path, missing):
    checkpoint = _without(pretrained_dir, tmp_path, missing)
    message = _cli_error(["--checkpoint", str(checkpoint), "--train", str(squad_file), "--dev", str(squad_file),
                          "--out", str(tmp_path / "out")])
    assert f"{resolve_checkpoint(checkpoint) / missing} is missing" in message


def test_missing_train_file_flag(pretrained_dir, squad_file, tmp_path):
    message = _cli_error(["--checkpoint", str(pretrained_dir), "--dev", str(squad_file), "--out", str(tmp_path / "o")])
    assert "--train is required" in message and "--split-dev-by-article" in message


def test_malformed_squad_names_the_file(pretrained_dir, squad_file, tmp_path):
    broken = tmp_path / "broken.json"
    broken.write_text('{"data": [', encoding="utf-8")
    message = _cli_error(["--checkpoint", str(pretrained_dir), "--train", str(broken), "--dev", str(squad_file),
                          "--out", str(tmp_path / "o")])
    assert str(broken) in message and "malformed JSON" in message


def test_unwritable_out(pretrained_dir, squad_file, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    message = _cli_error(["--checkpoint", str(pretrained_dir), "--train", str(squad_file), "--dev", str(squad_file),
                          "--out", str(blocker / "out")])
    assert "not writable" in message and "--out" in message


def test_sequence_longer_than_the_model_positions(pretrained_dir, squad_file, tmp_path):
    message = _cli_error(["--checkpoint", str(pretrained_dir), "--train", str(squad_file), "--dev", str(squad_file),
                          "--out", str(tmp_path / "o"), "--max-seq-len", "256"])
    assert "--max-seq-len 256 exceeds the model's max_position_embeddings 128" in message


def test_out_must_not_overwrite_the_checkpoint(pretrained_dir, squad_file):
    message = _cli_error(["--checkpoint", str(pretrained_dir), "--train", str(squad_file), "--dev", str(squad_file),
                          "--out", str(pretrained_dir)])
    assert "overwrite the pretrained model" in message
