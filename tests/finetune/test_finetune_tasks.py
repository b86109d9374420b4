"""The shared fine-tuning loop on SST-2 and WNUT-17 style data: a tiny model overfits a handful of
sentences to accuracy 100 and a handful of NER sentences to entity F1 100, through the CLI, the
official metrics and the written predictions; --resume continues an interrupted run bit for bit;
bad input ends with one ``error:`` line."""
import json
import shutil

import numpy as np
import pytest

import minispanbert.finetune.loop as finetune
from minispanbert.config import ModelConfig
from minispanbert.data import train_tokenizer
from minispanbert.engine.kernels import adamw as installed_optimizer
from minispanbert.engine.runs.checkpoint import load_checkpoint, save_checkpoint
from minispanbert.finetune.loop import main as finetune_main
from minispanbert.model.spanbert_loss import init_pretraining_params

SENTENCES = [("a charming and moving film", 1), ("dull , flat and lifeless", 0), ("a gorgeous , witty delight", 1),
             ("tedious and painfully slow", 0), ("the best film of the year", 1), ("a mess from start to finish", 0)]
NER = [
    [("Tim", "B-person"), ("Cook", "I-person"), ("visited", "O"), ("Paris", "B-location")],
    [("I", "O"), ("love", "O"), ("Star", "B-creative-work"), ("Wars", "I-creative-work")],
    [("Apple", "B-corporation"), ("sells", "O"), ("the", "O"), ("iPhone", "B-product")],
    [("the", "O"), ("Beatles", "B-group"), ("played", "O"), ("in", "O"), ("Hamburg", "B-location")],
    [("Ed", "B-person"), ("met", "O"), ("Jo", "B-person"), ("at", "O"), ("Google", "B-corporation")],
]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A checkpoint in the pretraining format with a very small random model and a tokenizer trained
    on the sentences, so that overfitting takes seconds."""
    out = tmp_path_factory.mktemp("small") / "ckpt"
    texts = [s for s, _ in SENTENCES] + [" ".join(w for w, _ in sentence) for sentence in NER]
    tokenizer = train_tokenizer(texts * 3, 200)
    config = ModelConfig(vocab_size=tokenizer.get_vocab_size(), hidden_size=32, num_hidden_layers=2,
                         num_attention_heads=2, intermediate_size=64, max_position_embeddings=128, sbo_position_dim=8)
    save_checkpoint(out, params=init_pretraining_params(config, 0, xp=np), step=0, config={"model": config.to_dict()},
                    files={"tokenizer.json": tokenizer.to_str()})
    return out


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    sst2 = root / "sst2.tsv"
    sst2.write_text("sentence\tlabel\n" + "".join(f"{s} \t{y}\n" for s, y in SENTENCES), encoding="utf-8")
    conll = root / "ner.conll"
    conll.write_text("\n".join("".join(f"{w}\t{t}\n" for w, t in sentence) for sentence in NER), encoding="utf-8")
    return {"sst2": sst2, "wnut17": conll}


def test_sst2_overfits_six_sentences_to_accuracy_100(checkpoint, files, tmp_path, capsys):
    out = tmp_path / "sst2"
    result = finetune_main(["sst2", "--checkpoint", str(checkpoint), "--train", str(files["sst2"]),
                            "--dev", str(files["sst2"]), "--out", str(out), "--steps", "40", "--batch-size", "6",
                            "--lr", "3e-3", "--dropout", "0", "--eval-every", "20"])
    scores = result["scores"]["dev"]
    assert scores["accuracy"] == 100.0 and scores["f1"] == 100.0 and scores["confusion"] == [[3, 0], [0, 3]]
    assert result["train_losses"][-1] < 0.1 * result["train_losses"][0]
    rows = (out / "predictions.dev.tsv").read_text().splitlines()
    assert rows[0] == "sentence\tlabel\tpredicted" and all(r.split("\t")[1] == r.split("\t")[2] for r in rows[1:])
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if r["split"] == "dev"] == [20, 40]
    saved = load_checkpoint(out, xp=np)
    assert "classifier.weight" in saved.params and "bert.pooler.dense.weight" in saved.params
    assert saved.step == 40 and saved.extra["dev"]["accuracy"] == 100.0
    assert (out / "finetune.png").is_file() and (saved.directory / "tokenizer.json").is_file()
    assert "confusion (rows gold 0/1, columns predicted 0/1): [[3, 0], [0, 3]]" in capsys.readouterr().out


def test_wnut17_overfits_five_sentences_to_entity_f1_100(checkpoint, files, tmp_path):
    out = tmp_path / "ner"
    result = finetune_main(["wnut17", "--checkpoint", str(checkpoint), "--train", str(files["wnut17"]),
                            "--dev", str(files["wnut17"]), "--test", str(files["wnut17"]), "--out", str(out),
                            "--steps", "60", "--batch-size", "5", "--lr", "5e-3", "--dropout", "0"])
    for split in ("dev", "test"):
        scores = result["scores"][split]
        assert (scores["f1"], scores["gold"], scores["correct"]) == (100.0, 10, 10), split
        assert scores["surface_form"]["f1"] == 100.0
    lines = (out / "predictions.test.conll").read_text().split("\n\n")[0].splitlines()
    assert lines[0] == "Tim\tB-person\tB-person" and len(lines) == 4


def test_resume_continues_an_interrupted_run_bit_for_bit(checkpoint, files, tmp_path, monkeypatch):
    args = ["sst2", "--checkpoint", str(checkpoint), "--train", str(files["sst2"]), "--dev", str(files["sst2"]),
            "--steps", "6", "--batch-size", "4", "--save-every", "2"]  # dropout on: the masks must be redrawn alike
    straight = finetune_main([*args, "--out", str(tmp_path / "straight")])

    real_step, calls = installed_optimizer.clip_and_step, []  # what the command runs

    def interrupted_step(*a, **k):
        calls.append(1)
        if len(calls) == 4:  # during step 4: the step-2 checkpoint is the last one saved
            raise KeyboardInterrupt
        return real_step(*a, **k)

    monkeypatch.setattr(installed_optimizer, "clip_and_step", interrupted_step)
    with pytest.raises(SystemExit, match="interrupted"):
        finetune_main([*args, "--out", str(tmp_path / "resumed")])
    monkeypatch.setattr(installed_optimizer, "clip_and_step", real_step)
    assert load_checkpoint(tmp_path / "resumed", xp=np).step == 2
    resumed = finetune_main([*args, "--resume", str(tmp_path / "resumed")])
    assert resumed["train_losses"] == straight["train_losses"][2:]
    a, b = load_checkpoint(tmp_path / "straight", xp=np), load_checkpoint(tmp_path / "resumed", xp=np)
    for name in a.params:
        np.testing.assert_array_equal(a.params[name], b.params[name])
    logged = [json.loads(line) for line in (tmp_path / "resumed" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in logged if r["split"] == "train"] == list(range(1, 7))
    message = _cli_error([*args, "--resume", str(tmp_path / "resumed"), "--steps", "8", "--lr", "1e-3"])
    assert "lr: saved 0.0003, requested 0.001" in message


def _cli_error(argv):
    with pytest.raises(SystemExit) as exc:
        finetune_main(argv)
    message = str(exc.value.code)
    assert message.startswith("error: ") and "\n" not in message, message
    return message


def test_bad_inputs_end_with_one_line(checkpoint, files, tmp_path):
    base = ["--checkpoint", str(checkpoint), "--out", str(tmp_path / "o")]
    assert "--train is required for sst2" in _cli_error(["sst2", *base, "--dev", str(files["sst2"])])
    unlabelled = tmp_path / "test.tsv"
    unlabelled.write_text("index\tsentence\n0\ta film\n", encoding="utf-8")
    message = _cli_error(["sst2", *base, "--train", str(files["sst2"]), "--dev", str(files["sst2"]),
                          "--test", str(unlabelled)])
    assert str(unlabelled) in message and "has no labels" in message
    broken = tmp_path / "broken.conll"
    broken.write_text("Paris\tB-location\nLondon B-location\n", encoding="utf-8")
    message = _cli_error(["wnut17", *base, "--train", str(broken), "--dev", str(files["wnut17"])])
    assert message.startswith(f"error: {broken}:2: expected 2 tab-separated columns")
    assert "for squad only" in _cli_error(["sst2", *base, "--dev", "x", "--split-dev-by-article", "0.2"])
    resume = ["sst2", "--train", str(files["sst2"]), "--dev", str(files["sst2"]), "--resume"]
    (tmp_path / "empty").mkdir()
    assert "holds no checkpoint" in _cli_error([*resume, str(tmp_path / "empty")])
    pretraining_copy = tmp_path / "copy"
    shutil.copytree(checkpoint, pretraining_copy)
    assert "no resumable fine-tuning run" in _cli_error([*resume, str(pretraining_copy)])
    assert "--checkpoint is required" in _cli_error(["sst2", "--train", "x", "--dev", "x"])
    taken = tmp_path / "taken"
    (taken / "notes.txt").parent.mkdir()
    (taken / "notes.txt").write_text("mine")
    message = _cli_error(["sst2", *base[:2], "--out", str(taken), "--train", str(files["sst2"]), "--dev",
                          str(files["sst2"])])
    assert "already holds files" in message and "--overwrite" in message


def test_a_hugging_face_folder_is_a_checkpoint(checkpoint, files, tmp_path, capsys):
    """--checkpoint may be a Hugging Face BERT folder: its encoder and pooler are taken, its own
    classifier is not (the task head is drawn fresh, as for our checkpoints)."""
    from minispanbert.finetune.sequence_classification import init_sequence_classification_params
    from minispanbert.interop.huggingface import save_pretrained
    from minispanbert.interop.tokenizer import read_tokenizer_json

    saved = load_checkpoint(checkpoint, xp=np)
    config = ModelConfig.from_dict(saved.config["model"])
    params = init_sequence_classification_params(config, 2, 5, xp=np)
    params["bert.pooler.dense.bias"] = np.full_like(params["bert.pooler.dense.bias"], 0.25)
    hf = tmp_path / "hf"
    save_pretrained(hf, params, config, tokenizer=read_tokenizer_json(saved.directory / "tokenizer.json"),
                    architecture="BertForSequenceClassification", labels=["negative", "positive"])
    pretrained, _, _, init, unused = finetune.model_setup(
        finetune.FinetuneConfig(task="sst2", checkpoint=str(hf)), np)
    assert init.startswith("pretrained encoder from Hugging Face BertForSequenceClassification")
    np.testing.assert_array_equal(pretrained["bert.pooler.dense.bias"], 0.25)
    np.testing.assert_array_equal(pretrained["bert.encoder.layer.1.output.dense.weight"],
                                  params["bert.encoder.layer.1.output.dense.weight"])
    assert unused == ["classifier.bias", "classifier.weight"]
    result = finetune_main(["sst2", "--checkpoint", str(hf), "--train", str(files["sst2"]), "--dev", str(files["sst2"]),
                            "--out", str(tmp_path / "out"), "--steps", "2"])
    assert result["steps"] == 2


def test_two_threads_follow_one_thread(checkpoint, files, tmp_path):
    """--threads 2 splits each batch over two threads (minispanbert/thread_parallel.py): with dropout
    off, in float64, the same losses and predictions as one thread."""
    args = ["sst2", "--checkpoint", str(checkpoint), "--train", str(files["sst2"]), "--dev", str(files["sst2"]),
            "--steps", "6", "--batch-size", "5", "--lr", "3e-3", "--dropout", "0", "--dtype", "float64"]
    one = finetune_main([*args, "--threads", "1", "--out", str(tmp_path / "one")])
    two = finetune_main([*args, "--threads", "2", "--out", str(tmp_path / "two")])
    np.testing.assert_allclose(two["train_losses"], one["train_losses"], rtol=1e-9, atol=0)
    assert two["scores"]["dev"] == one["scores"]["dev"]
    assert (tmp_path / "one" / "predictions.dev.tsv").read_text() == (tmp_path / "two" / "predictions.dev.tsv").read_text()


def test_the_learning_rate_warms_up_over_a_fraction_of_all_steps(checkpoint, files, tmp_path):
    """BERT's fine-tuning recipe (Hugging Face's get_linear_schedule_with_warmup with num_warmup_steps
    = warmup_ratio * total steps): 20 steps with --warmup-fraction 0.25 rise linearly over the first
    5 steps (lr = peak * s / 5 at the 0-based step s), then decay linearly to 0 at step 20. The six
    sentences make 3 batches of 2 per epoch, so a warm-up counted in epochs would differ."""
    out = tmp_path / "warmup"
    finetune_main(["sst2", "--checkpoint", str(checkpoint), "--train", str(files["sst2"]), "--dev", str(files["sst2"]),
                   "--out", str(out), "--steps", "20", "--batch-size", "2", "--lr", "1e-3", "--warmup-fraction", "0.25"])
    logged = [r["lr"] for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines()) if r["split"] == "train"]
    expected = [1e-3 * s / 5 if s < 5 else 1e-3 * (20 - s) / 15 for s in range(20)]
    assert logged == pytest.approx(expected, rel=1e-12, abs=1e-15)


def test_each_step_draws_fresh_dropout_masks_and_a_rerun_draws_the_same(checkpoint, files, tmp_path, monkeypatch):
    """Dropout masks change from step to step (as a framework's generator advances) yet are a
    function of (seed, step): three steps on the same six sentences record three different masks
    before the classifier, and a second run records the same three."""
    import minispanbert.finetune.sequence_classification as head_module
    real = head_module.dropout_forward
    masks = []

    def recording(x, p, rng, **kw):
        out, cache = real(x, p, rng, **kw)
        if kw["train"]:
            masks.append(None if cache is None else (cache == 0).tobytes())
        return out, cache

    monkeypatch.setattr(head_module, "dropout_forward", recording)
    args = ["sst2", "--checkpoint", str(checkpoint), "--train", str(files["sst2"]), "--dev", str(files["sst2"]),
            "--steps", "3", "--batch-size", "6", "--dropout", "0.1", "--threads", "1"]
    finetune_main([*args, "--out", str(tmp_path / "first")])
    first, masks[:] = list(masks), []
    finetune_main([*args, "--out", str(tmp_path / "again")])
    assert len(first) == 3 and None not in first and len(set(first)) == 3
    assert masks == first


def test_a_trimmed_batch_is_as_wide_as_its_longest_row():
    """``take(..., trim=True)`` cuts the padding columns that no row of the batch uses, never a real token."""
    from minispanbert.finetune.recipes import take
    lengths = [3, 5, 2]
    mask = np.array([[1] * n + [0] * (8 - n) for n in lengths])
    arrays = {"input_ids": np.arange(24).reshape(3, 8) * mask, "attention_mask": mask, "labels": np.array([1, 0, 1])}
    batch = take(arrays, [0, 1], trim=True)
    assert batch["input_ids"].shape == (2, 5) and batch["attention_mask"].sum() == 3 + 5
    np.testing.assert_array_equal(batch["input_ids"], arrays["input_ids"][:2, :5])
    np.testing.assert_array_equal(batch["labels"], [1, 0])
    assert take(arrays, [2], trim=False)["input_ids"].shape == (1, 8)


def _padded_copy(tokenizer_json: str) -> str:
    """The same tokenizer with padding to 16 and truncation at 6 switched on, as sentence-transformers
    ships its tokenizer.json (there: 128 and 128)."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_str(tokenizer_json)
    tok.enable_padding(length=16, pad_id=0, pad_token="[PAD]")
    tok.enable_truncation(6)
    return tok.to_str()


def test_no_command_keeps_the_padding_or_truncation_a_tokenizer_json_switches_on(checkpoint, files, tmp_path, capsys):
    """A tokenizer.json that pads to 16 and truncates at 6 pieces gives exactly what the same file
    without those settings gives, through every loader and command: fine-tuning from our checkpoint
    and from a Hugging Face folder (same losses, predictions and "0 cut" count), fill_mask, and
    export_hf's written tokenizer. Kept, the padding would feed [PAD] ids the model attends to and
    report every sentence cut."""
    from minispanbert.data import load_tokenizer
    from minispanbert.family.bpe_tokenizer import load_bpe_tokenizer, train_bpe_tokenizer
    from minispanbert.interop.export_hf import main as export_main
    from minispanbert.interop.fill_mask import fill_mask
    from minispanbert.interop.huggingface import load_pretrained, save_pretrained
    from minispanbert.interop.tokenizer import read_tokenizer_json

    plain_ckpt, padded_ckpt = tmp_path / "plain-ckpt", tmp_path / "padded-ckpt"
    shutil.copytree(checkpoint, plain_ckpt)
    shutil.copytree(checkpoint, padded_ckpt)
    (tokenizer_file,) = padded_ckpt.rglob("tokenizer.json")
    tokenizer_file.write_text(_padded_copy(tokenizer_file.read_text()))
    saved = load_checkpoint(checkpoint, xp=np)
    config = ModelConfig.from_dict(saved.config["model"])
    plain_hf, padded_hf = tmp_path / "plain-hf", tmp_path / "padded-hf"
    save_pretrained(plain_hf, saved.params, config, tokenizer=read_tokenizer_json(saved.directory / "tokenizer.json"))
    shutil.copytree(plain_hf, padded_hf)
    (padded_hf / "tokenizer.json").write_text(_padded_copy((plain_hf / "tokenizer.json").read_text()))
    bpe_file = tmp_path / "bpe.json"
    bpe_file.write_text(_padded_copy(train_bpe_tokenizer([s for s, _ in SENTENCES] * 3, 300).to_str()))

    for tok in (load_tokenizer(tokenizer_file), read_tokenizer_json(padded_hf / "tokenizer.json"),
                load_pretrained(padded_hf).tokenizer, load_bpe_tokenizer(bpe_file)):
        assert tok.padding is None and tok.truncation is None
        assert len(tok.encode("a charming and moving film , the best of the year").ids) > 6
    # a padded tokenizer handed to the task encoders directly (the Python API) is not mutated either
    from tokenizers import Tokenizer

    from minispanbert.finetune import sst2, wnut17

    padded_tok, plain_tok = Tokenizer.from_str(tokenizer_file.read_text()), load_tokenizer(tokenizer_file)
    sentences = sst2.read_sst2(files["sst2"])
    ner = wnut17.read_conll(files["wnut17"])
    for encode, rows in ((sst2.sentence_arrays, sentences), (wnut17.tagged_arrays, ner)):
        got, want = encode(rows, padded_tok, 128), encode(rows, plain_tok, 128)
        for name in want[0]:
            np.testing.assert_array_equal(got[0][name], want[0][name])
        assert got[-1] == want[-1]  # sentences cut / words lost
        if encode is wnut17.tagged_arrays:  # each word's first piece
            assert all(np.array_equal(a, b) for a, b in zip(got[1], want[1], strict=True))
    assert padded_tok.padding is not None and padded_tok.truncation is not None

    def finetuned(folder, name, task="sst2"):
        capsys.readouterr()
        result = finetune_main([task, "--checkpoint", str(folder), "--train", str(files[task]), "--dev",
                                str(files[task]), "--out", str(tmp_path / name), "--steps", "3", "--batch-size", "3"])
        return result["train_losses"], (tmp_path / name / f"predictions.dev.{'tsv' if task == 'sst2' else 'conll'}"
                                         ).read_text(), capsys.readouterr().out

    for plain, padded in ((plain_ckpt, padded_ckpt), (plain_hf, padded_hf)):
        for task in ("sst2", "wnut17"):
            losses, predictions, log = finetuned(padded, f"{padded.name}-{task}", task)
            assert (losses, predictions) == finetuned(plain, f"{plain.name}-{task}", task)[:2]
            if task == "sst2":
                assert "(0 cut to --max-seq-len 128)" in log
    texts = ["a charming [MASK] moving film , the best of the year"]
    assert fill_mask(load_pretrained(padded_hf), texts, xp=np, log=lambda *_: None) == \
        fill_mask(load_pretrained(plain_hf), texts, xp=np, log=lambda *_: None)
    export_main(["--checkpoint", str(padded_ckpt), "--out", str(tmp_path / "exported")])
    exported = json.loads((tmp_path / "exported" / "tokenizer.json").read_text())
    assert exported["padding"] is None and exported["truncation"] is None


def test_without_lr_the_peak_follows_the_model_size(checkpoint, files, tmp_path):
    """--lr unset: 3e-4 for the tiny presets (hidden < 384), 1e-4 for MiniLM-sized models, 5e-5 from
    BERT-base up (the largest of BERT's fine-tuning grid, §4.1). The step after a warm-up of one step
    runs at the peak."""
    sizes = {128: 3e-4, 256: 3e-4, 383: 3e-4, 384: 1e-4, 512: 1e-4, 767: 1e-4, 768: 5e-5, 1024: 5e-5}
    assert {h: finetune.default_lr(ModelConfig(hidden_size=h, num_attention_heads=1)) for h in sizes} == sizes
    finetune_main(["sst2", "--checkpoint", str(checkpoint), "--train", str(files["sst2"]), "--dev", str(files["sst2"]),
                   "--out", str(tmp_path / "run"), "--steps", "10", "--batch-size", "3", "--warmup-fraction", "0.1"])
    logged = [r["lr"] for r in map(json.loads, (tmp_path / "run" / "metrics.jsonl").read_text().splitlines())
              if r["split"] == "train"]
    assert logged[1] == 3e-4  # the checkpoint's hidden size is 32
    # a --resume without --lr continues at the run's own peak, not the default
    args = ["sst2", "--checkpoint", str(checkpoint), "--train", str(files["sst2"]), "--dev", str(files["sst2"]),
            "--batch-size", "3", "--warmup-fraction", "0"]
    finetune_main([*args, "--out", str(tmp_path / "own"), "--steps", "2", "--lr", "1e-3"])
    finetune_main([*args, "--resume", str(tmp_path / "own"), "--steps", "4"])
    logged = [r["lr"] for r in map(json.loads, (tmp_path / "own" / "metrics.jsonl").read_text().splitlines())
              if r["split"] == "train"]
    assert logged[2] == pytest.approx(1e-3 * (4 - 2) / 4, rel=1e-12)  # linear decay from 1e-3 over 4 steps


def test_an_export_of_a_task_run_carries_its_labels_in_float32_and_a_hugging_face_folder_needs_none(
        checkpoint, files, tmp_path, capsys):
    from safetensors import safe_open

    from minispanbert.finetune.wnut17 import TYPES
    from minispanbert.interop.export_hf import main as export_main

    wnut_tags = ["O"] + [f"{bio}-{t}" for t in TYPES for bio in ("B", "I")]  # WNUT-17's six types, BIO
    assert TYPES == ("corporation", "creative-work", "group", "location", "person", "product")
    for task, labels in (("sst2", ["negative", "positive"]), ("wnut17", wnut_tags)):
        finetune_main([task, "--checkpoint", str(checkpoint), "--train", str(files[task]), "--dev", str(files[task]),
                       "--out", str(tmp_path / task), "--steps", "1", "--dtype", "float64"])
        for dtype in ("float32", "float64"):
            out = tmp_path / f"{task}-hf-{dtype}"
            export_main(["--checkpoint", str(tmp_path / task), "--out", str(out),
                         *(["--dtype", dtype] if dtype == "float64" else [])])
            config = json.loads((out / "config.json").read_text())
            assert [config["id2label"][str(i)] for i in range(len(labels))] == labels
            assert config["label2id"] == {label: i for i, label in enumerate(labels)}
            with safe_open(str(out / "model.safetensors"), "np") as f:
                assert {str(f.get_tensor(name).dtype) for name in f.keys()} == {dtype}
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        export_main(["--checkpoint", str(tmp_path / "sst2-hf-float32"), "--out", str(tmp_path / "again")])
    message = str(exc.value.code)
    assert "is already a Hugging Face model folder" in message and "no export is needed" in message
    assert not (tmp_path / "again").exists()
