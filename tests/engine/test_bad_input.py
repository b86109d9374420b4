"""Bad input to every command line tool: exit status != 0, exactly one line on stderr that names the
problem (and, in the message, the fix), no traceback, and no file of an earlier run changed.

Each case runs the tool's ``main(argv)`` in-process (what ``python -m ...`` runs), against one
shared workspace holding a real (micro preset) pretraining run, a fine-tuning checkpoint and data
files; every file in the workspace is hashed before and after each case.
"""
import hashlib
import importlib.util
import io
import json
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest

from minispanbert import config, finetune_qa
from minispanbert.coursework.__main__ import main as coursework_main
from minispanbert.data import __main__ as data_cli
from minispanbert.engine import check_gradients
from minispanbert.engine import trainer as train
from minispanbert.engine.bench import bench
from minispanbert.engine.runs.checkpoint import load_checkpoint, save_checkpoint
from minispanbert.family.compare_objectives import main as compare_objectives_main
from minispanbert.finetune import evaluate_qa
from minispanbert.finetune.loop import main as finetune_main
from minispanbert.interop.export_hf import main as export_hf_main
from minispanbert.interop.fill_mask import main as fill_mask_main
from minispanbert.interop.predict_qa import main as predict_qa_main

from micro_runs import MICRO_ARGS, micro_config, write_corpus  # noqa: E402

SQUAD = {"version": "1.1", "data": [
    {"title": t, "paragraphs": [{"context": "the cat sat on the mat near the old stone bridge .", "qas": [
        {"id": f"{t}-{i}", "question": "where did the cat sit ?",
         "answers": [{"text": "on the mat", "answer_start": 12}]} for i in range(2)]}]}
    for t in ("A", "B", "C")]}


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    """The workspace: {name: path}. Built once; every case must leave it byte-identical."""
    import numpy as np

    config.PRESETS["micro"] = micro_config()
    root = tmp_path_factory.mktemp("workspace")
    paths = {"root": root, "corpus": write_corpus(root / "corpus.txt"),
             "other": write_corpus(root / "other.txt", seed=3)}
    train.run(train.RunConfig(preset="micro", data=str(paths["corpus"]), out=str(root / "run"), steps=2,
                                batch_size=2, seq_len=16, eval_batches=1, print_every=1000), log=lambda _m: None)
    paths["run"] = root / "run"
    pretrained = load_checkpoint(paths["run"], xp=np)
    paths["qa"] = root / "qa"
    save_checkpoint(paths["qa"], params=pretrained.params, step=3,
                    config={"model": pretrained.config["model"], "finetune": {}},
                    files={"tokenizer.json": (pretrained.directory / "tokenizer.json").read_text()})
    files = {
        "empty": "\n\n", "tokenizer_bad": "{not json", "squad": json.dumps(SQUAD), "malformed": '{"data": [',
        "v2": json.dumps({"data": [{"title": "A", "paragraphs": [{"context": "c", "qas": [
            {"id": "1", "question": "?", "answers": [], "is_impossible": True}]}]}]}),
        "squad_bad_offsets": json.dumps({"data": [{"title": "A", "paragraphs": [{"context": "the cat sat .", "qas": [
            {"id": "x", "question": "?", "answers": [{"text": "cat", "answer_start": 0}]}]}]}]}),
        "preds": json.dumps({"A-0": "on the mat"}), "preds_list": '["on the mat"]', "preds_number": '{"A-0": 3}',
        "a_file": "just a file",
    }
    for name, text in files.items():
        paths[name] = root / f"{name}.json"
        paths[name].write_text(text, encoding="utf-8")
    paths["binary"] = root / "binary.txt"
    paths["binary"].write_bytes(b"hello \xff\xfe world\n")
    paths["empty_dir"] = root / "empty_dir"
    paths["empty_dir"].mkdir()
    add_model_folders(paths, pretrained)
    yield paths
    config.PRESETS.pop("micro", None)


def add_model_folders(paths: dict, pretrained) -> None:
    """Hugging Face folders (good, with int32 weights, with NaN weights, with layer_norm_eps -1, a QA
    one), copies of the pretraining run with NaN or int32 weights, SST-2 files with and without
    labels, and a named pipe (a non-regular --out)."""
    import os
    import shutil

    import numpy as np
    import safetensors.numpy

    from minispanbert.engine.runs.checkpoint import MODEL_FILE
    from minispanbert.interop.export_hf import main as export_main

    root = paths["root"]
    with redirect_stdout(io.StringIO()):
        export_main(["--checkpoint", str(paths["run"]), "--out", str(root / "hf")])
        export_main(["--random-init", "micro", "--head", "qa", "--tokenizer", str(paths["run"]), "--out",
                     str(root / "hf_qa")])
    paths["hf"], paths["hf_qa"] = root / "hf", root / "hf_qa"
    name = "bert.encoder.layer.0.output.dense.weight"

    def with_tensor(file: Path, value) -> None:
        """Rewrite one tensor of ``file``, keeping its metadata (our checkpoints' save id)."""
        tensors = safetensors.numpy.load_file(str(file))
        with safetensors.safe_open(str(file), "np") as handle:
            metadata = handle.metadata()
        tensors[name] = value(tensors[name])
        safetensors.numpy.save_file(tensors, str(file), metadata=metadata)

    for label, value in (("int", lambda w: (w * 100).astype(np.int32)), ("nan", lambda w: w * np.nan)):
        paths[f"hf_{label}"] = root / f"hf_{label}"
        shutil.copytree(paths["hf"], paths[f"hf_{label}"])
        with_tensor(paths[f"hf_{label}"] / "model.safetensors", value)
        paths[f"run_{label}"] = root / f"run_{label}"
        shutil.copytree(paths["run"], paths[f"run_{label}"])
        with_tensor(paths[f"run_{label}"] / pretrained.directory.relative_to(paths["run"]) / MODEL_FILE, value)
    paths["hf_eps"] = root / "hf_eps"
    shutil.copytree(paths["hf"], paths["hf_eps"])
    hf_config = json.loads((paths["hf_eps"] / "config.json").read_text())
    (paths["hf_eps"] / "config.json").write_text(json.dumps({**hf_config, "layer_norm_eps": -1}))
    paths["ner"] = root / "ner.conll"
    paths["ner"].write_text("the\tO\ncat\tO\nsat\tO\n\nParis\tB-location\n", encoding="utf-8")
    for label, text in (("sst2_train", "sentence\tlabel\nthe cat sat on the mat .\t1\ndogs barked loudly .\t0\n"),
                        ("sst2_test", "index\tsentence\n0\tthe cat sat on the mat .\n1\tdogs barked loudly .\n")):
        paths[label] = root / f"{label}.tsv"
        paths[label].write_text(text, encoding="utf-8")
    paths["fifo"] = root / "fifo"
    os.mkfifo(paths["fifo"])


def snapshot(root: Path) -> dict:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


TRAIN = [*MICRO_ARGS, "--data", "{corpus}", "--steps", "2"]
NEW = ["--out", "{root}/new"]
FINETUNE = ["--checkpoint", "{run}", "--dev", "{squad}", "--split-dev-by-article", "0.34", "--out", "{root}/qa-new",
            "--max-seq-len", "32", "--max-query-len", "8", "--doc-stride", "8", "--steps", "1"]
SST2 = ["--checkpoint", "{hf}", "--train", "{sst2_train}", "--dev", "{sst2_train}", "--out", "{root}/ft-new",
        "--steps", "1", "--max-seq-len", "32"]
NER = ["--train", "{ner}", "--dev", "{ner}", "--out", "{root}/ft-new", "--steps", "1", "--max-seq-len", "32"]
COMPARE = ["--data", "{corpus}", "--preset", "micro", "--batch-size", "2", "--seq-len", "16"]
PREDICT = ["--model", "{hf_qa}", "--data", "{squad}", "--max-seq-len", "32", "--max-query-len", "8",
           "--doc-stride", "8"]
HAS_CUPY = importlib.util.find_spec("cupy") is not None

CASES = [
    # ---- train: flags
    ("train", [*TRAIN, *NEW, "--steps", "0"], "--steps must be at least 1"),
    ("train", [*TRAIN, *NEW, "--batch-size", "0"], "--batch-size must be at least 1"),
    ("train", [*TRAIN, *NEW, "--seq-len", "2"], "--seq-len 2 is outside [3, 32]"),
    ("train", [*TRAIN, *NEW, "--seq-len", "4096"], "--seq-len 4096 is outside"),
    ("train", [*TRAIN, *NEW, "--preset", "huge"], "argument --preset: invalid choice: 'huge'"),
    ("train", [*TRAIN, *NEW, "--masking", "random"], "argument --masking: invalid choice"),
    ("train", [*TRAIN, *NEW, "--backend", "tpu"], "argument --backend: invalid choice"),
    ("train", [*TRAIN, *NEW, "--lr", "-1e-3"], "--lr -0.001 is not allowed: give a positive number"),
    ("train", [*TRAIN, *NEW, "--lr", "nan"], "--lr nan is not allowed"),
    ("train", [*TRAIN, *NEW, "--max-grad-norm", "nan"], "--max-grad-norm nan is not allowed"),
    ("train", [*TRAIN, *NEW, "--max-grad-norm", "0"], "--max-grad-norm 0.0 is not allowed"),
    ("train", [*TRAIN, *NEW, "--weight-decay", "-1"], "--weight-decay -1.0 is not allowed"),
    ("train", [*TRAIN, *NEW, "--sbo-weight", "-1"], "--sbo-weight -1.0 is not allowed"),
    ("train", [*TRAIN, *NEW, "--seed=-1"], "--seed -1 is negative"),
    ("train", [*TRAIN, *NEW, "--dropout", "1.5"], "--dropout must lie in [0, 1)"),
    ("train", [*TRAIN, *NEW, "--threads", "0"], "--threads must be at least 1"),
    ("train", [*TRAIN, *NEW, "--threads", "2", "--backend", "cupy"], "--threads applies to --backend numpy"),
    ("train", [*TRAIN, *NEW, "--warmup", "5000"], "--warmup 5000 must lie in [0, --steps 2]"),
    ("train", [*TRAIN, *NEW, "--valid-fraction", "1"], "--valid-fraction 1.0 must lie in [0, 1)"),
    ("train", [*TRAIN, *NEW, "--valid-fraction", "-0.1"], "--valid-fraction -0.1 must lie in [0, 1)"),
    ("train", [*TRAIN, *NEW, "--eval-every", "0"], "--eval-every must be at least 1"),
    ("train", [*TRAIN, *NEW, "--save-every", "0"], "--save-every must be at least 1"),
    ("train", [*TRAIN, *NEW, "--log-every", "0"], "--log-every must be at least 1"),
    ("train", [*TRAIN, *NEW, "--print-every", "0"], "--print-every must be at least 1"),
    ("train", [*TRAIN, *NEW, "--keep-checkpoints", "0"], "--keep-checkpoints must be at least 1"),
    ("train", [*TRAIN, *NEW, "--steps", "abc"], "argument --steps: invalid int value: 'abc'"),
    ("train", [*TRAIN, *NEW, "--bogus"], "unrecognized arguments: --bogus"),
    ("train", [*TRAIN, *NEW, "--batch-size", "1000"], "fewer than --batch-size 1000"),
    pytest.param("train", [*TRAIN, *NEW, "--backend", "cupy"], "--backend numpy",
                 marks=pytest.mark.skipif(HAS_CUPY, reason="CuPy is installed here")),
    # ---- train: data and folders
    ("train", [*TRAIN, *NEW, "--data", "{root}/missing.txt"], "missing.txt"),
    ("train", [*TRAIN, *NEW, "--data", "{empty}"], "empty"),
    ("train", [*TRAIN, *NEW, "--data", "{binary}"], "UTF-8"),
    ("train", [*TRAIN, "--out", "{run}"], "already holds a run saved at step 2: continue it with --resume"),
    ("train", [*TRAIN, "--out", "{a_file}"], "is a file, not a folder"),
    ("train", [*TRAIN, "--out", "{a_file}/x"], "not writable"),
    ("train", [*TRAIN, "--resume", "{root}/nowhere"], "nowhere does not exist"),
    ("train", [*TRAIN, "--resume", "{empty_dir}"], "holds no checkpoint"),
    ("train", [*TRAIN, "--resume", "{run}", "--batch-size", "4", "--steps", "4"], "batch_size: saved 2, requested 4"),
    ("train", [*TRAIN, "--resume", "{run}", "--steps", "2"], "already at step 2: ask for more --steps"),
    ("train", [*TRAIN, "--resume", "{qa}", "--steps", "4"], "is not a pretraining checkpoint"),
    ("train", [*MICRO_ARGS, "--data", "{other}", "--resume", "{run}", "--steps", "4"], "the training data differs"),
    ("train", [*TRAIN, *NEW, "--tokenizer", "{root}/none.json"], "none.json not found"),
    ("train", [*TRAIN, *NEW, "--tokenizer", "{tokenizer_bad}"], "is not a tokenizer.json"),
    ("train", [*TRAIN, "--resume", "{run}", "--steps", "4", "--tokenizer", "{run}"], "exclude each other"),
    # ---- finetune_qa
    ("finetune_qa", ["--dev", "{squad}"], "--checkpoint is required"),
    ("finetune_qa", [*FINETUNE, "--checkpoint", "{root}/nowhere"], "nowhere does not exist"),
    ("finetune_qa", [*FINETUNE, "--checkpoint", "{empty_dir}"], "holds no checkpoint"),
    ("finetune_qa", ["--checkpoint", "{run}", "--dev", "{squad}", "--out", "{root}/q"], "--train is required"),
    ("finetune_qa", [*FINETUNE, "--train", "{squad}"], "exclude each other"),
    ("finetune_qa", ["--checkpoint", "{run}", "--train", "{squad_bad_offsets}", "--dev", "{squad}", "--out", "{root}/q",
                     "--max-seq-len", "32", "--steps", "1"], "no training question is usable"),
    ("finetune_qa", [*FINETUNE, "--split-dev-by-article", "1.5"], "in (0, 1), got 1.5"),
    ("finetune_qa", [*FINETUNE, "--dev", "{root}/missing.json"], "missing.json: cannot read"),
    ("finetune_qa", [*FINETUNE, "--dev", "{malformed}"], "malformed JSON at line 1"),
    ("finetune_qa", [*FINETUNE, "--dev", "{v2}"], "SQuAD v2.0 is not supported"),
    ("finetune_qa", [*FINETUNE, "--checkpoint", "{qa}", "--out", "{run}"], "already holds a run saved at step 2"),
    ("finetune_qa", [*FINETUNE, "--checkpoint", "{qa}", "--out", "{qa}"], "would overwrite the pretrained model"),
    ("finetune_qa", [*FINETUNE, "--max-seq-len", "256"], "--max-seq-len 256 exceeds"),
    ("finetune_qa", [*FINETUNE, "--lr", "-1"], "--lr and --max-grad-norm must be positive"),
    ("finetune_qa", [*FINETUNE, "--lr", "nan"], "--lr"),
    ("finetune_qa", [*FINETUNE, "--epochs", "0"], "--epochs must be at least 1"),
    ("finetune_qa", [*FINETUNE, "--seed", "-3"], "--seed -3 is negative"),
    ("finetune_qa", [*FINETUNE, "--warmup-fraction", "2"], "--warmup-fraction must lie in [0, 1]"),
    ("finetune_qa", [*FINETUNE, "--dropout", "1"], "--dropout must lie in [0, 1)"),
    ("finetune_qa", [*FINETUNE, "--threads", "0"], "--threads must be at least 1"),
    # ---- evaluate_qa
    ("evaluate_qa", [], "the following arguments are required: data, predictions"),
    ("evaluate_qa", ["{squad}", "{root}/missing.json"], "missing.json: cannot read"),
    ("evaluate_qa", ["{squad}", "{malformed}"], "malformed JSON"),
    ("evaluate_qa", ["{squad}", "{preds_list}"], "must be a JSON object"),
    ("evaluate_qa", ["{squad}", "{preds_number}"], "A-0"),
    ("evaluate_qa", ["{root}/missing.json", "{preds}"], "missing.json: cannot read"),
    ("evaluate_qa", ["{malformed}", "{preds}"], "malformed JSON"),
    ("evaluate_qa", ["{v2}", "{preds}"], "SQuAD v2.0 is not supported"),
    ("evaluate_qa", ["{preds_list}", "{preds}"], "expected a JSON object, got list"),
    # ---- data
    ("data", [], "the following arguments are required: command"),
    ("data", ["download", "nope"], "argument name: invalid choice: 'nope'"),
    ("data", ["download", "squad-v1.1", "--from", "{root}/missing.json", "--dir", "{root}/d"], "missing.json"),
    ("data", ["download", "wikitext-2", "--from", "{a_file}", "--dir", "{root}/d"], "a_file.json"),
    ("data", ["download", "wikitext-2", "--timeout", "abc"], "invalid float value: 'abc'"),
    ("data", ["fetch"], "invalid choice: 'fetch'"),
    # ---- bench
    ("bench", ["--steps", "0"], "--steps must be at least 1"),
    ("bench", ["--batch-size", "0"], "at least 1"),
    ("bench", ["--seq-len", "9999"], "9999"),
    ("bench", ["--preset", "huge"], "invalid choice: 'huge'"),
    ("bench", ["--json", "{a_file}/report.json", "--steps", "1"], "cannot write --json"),
    ("bench", ["--threads", "0"], "--threads"),
    ("bench", ["--dropout", "2"], "--dropout"),
    ("bench", ["--clock", "sundial"], "invalid choice: 'sundial'"),
    # ---- check_gradients
    ("check_gradients", ["--bogus"], "unrecognized arguments: --bogus"),
    ("check_gradients", ["extra"], "unrecognized arguments: extra"),
    # ---- the newer commands (issue #26): formats, foreign and broken checkpoints, output paths, messages
    ("finetune", ["sst2", *SST2, "--train", "{sst2_test}"], "sst2_test.tsv: has no labels (GLUE's test.tsv format"),
    ("finetune", ["sst2", *SST2, "--dev", "{sst2_test}"], "sst2_test.tsv: has no labels"),
    ("finetune", ["sst2", *SST2, "--checkpoint", "{hf_int}"],
     "'bert.encoder.layer.0.output.dense.weight' has dtype int32, not a float type"),
    ("finetune", ["sst2", *SST2, "--checkpoint", "{hf_nan}"], "holds NaN or inf"),
    ("finetune", ["sst2", *SST2, "--checkpoint", "{hf_eps}"], "config.json: config field layer_norm_eps must be"),
    ("finetune", ["sst2", *SST2, "--checkpoint", "{run_nan}"], "holds NaN or inf: the run diverged before this save"),
    ("finetune", ["sst2", *SST2, "--checkpoint", "{run_int}"], "has dtype int32, not a float type"),
    ("finetune", ["sst2", *SST2, "--checkpoint", "{hf}", "--out", "{a_file}"], "is a file, not a folder"),
    ("finetune", ["wnut17", *SST2], "sst2_train.tsv:1: unknown tag 'label'"),
    ("predict_qa", [*PREDICT, "--out", "{empty_dir}"], "--out {empty_dir} is a folder: name a file to write"),
    ("predict_qa", [*PREDICT, "--out", "{fifo}"], "is not a regular file (a device or a pipe)"),
    ("predict_qa", [*PREDICT, "--out", "{root}/no_folder/p.json"], "the folder {root}/no_folder does not exist"),
    ("predict_qa", [*PREDICT, "--out", "{a_file}/p.json"], "does not exist"),
    ("predict_qa", [*PREDICT, "--model", "{run}"], "is a minispanbert run folder, not a Hugging Face one: export it "
                                                   "first with python -m minispanbert.export_hf --checkpoint"),
    ("predict_qa", [*PREDICT, "--model", "{hf_nan}"], "holds NaN or inf"),
    ("predict_qa", [*PREDICT, "--model", "{hf_eps}"], "layer_norm_eps must be a small positive number"),
    ("fill_mask", ["--model", "{run}", "the [MASK] sat ."], "export it first with python -m minispanbert.export_hf"),
    ("fill_mask", ["--model", "{hf_int}", "the [MASK] sat ."], "has dtype int32"),
    ("fill_mask", ["--model", "{hf_eps}", "the [MASK] sat ."], "layer_norm_eps"),
    ("fill_mask", ["--model", "{hf_nan}", "the [MASK] sat ."], "holds NaN or inf"),
    ("export_hf", ["--checkpoint", "{hf}", "--out", "{root}/x"], "is already a Hugging Face model folder"),
    ("export_hf", ["--checkpoint", "{run}", "--out", "{a_file}"], "is a file, not a folder"),
    ("export_hf", ["--checkpoint", "{run_nan}", "--out", "{root}/x"], "holds NaN or inf"),
    ("export_hf", ["--checkpoint", "{run}", "--out", "{hf}"], "already holds files"),
    ("export_hf", ["--checkpoint", "{run}", "--out", "{run}"], "is a minispanbert run folder, never replaced"),
    ("train", [*TRAIN, *NEW, "--tokenizer", "{corpus}"], "corpus.txt is not a tokenizer.json"),
    ("compare_objectives", [*COMPARE, "--out", "{a_file}"], "is a file, not a folder"),
    ("compare_objectives", [*COMPARE, "--out", "{run}"], "already holds files (an earlier comparison?)"),
    ("compare_objectives", [*COMPARE, "--out", "{root}/x", "--objectives", "spanbert,gpt"], "unknown objective 'gpt'"),
    ("compare_objectives", [*COMPARE, "--out", "{root}/x", "--finetune", "sst2"], "needs --sst2-dir"),
    ("compare_objectives", [*COMPARE, "--out", "{root}/x", "--steps", "0"], "--steps must be at least 1"),
    ("coursework", ["grade", "{empty_dir}", "--assignment", "A1", "--out", "{empty_dir}"], "is a folder"),
    ("coursework", ["grade", "{empty_dir}", "--assignment", "A1", "--out", "{fifo}"], "is not a regular file"),
    ("coursework", ["grade", "{root}/nowhere.zip", "--assignment", "A1"], "does not exist"),
    ("coursework", ["grade", "{a_file}", "--assignment", "A1"], "is neither a folder nor a zip file"),
    ("coursework", ["submit", "--root", "{empty_dir}"], "has no coursework.json"),
    ("coursework", ["build", "A1", "--out", "{run}"], "already exists and is not an empty folder"),
    # ---- the same classes on the other commands that read weights or write files
    ("finetune", ["wnut17", *NER, "--checkpoint", "{hf_int}"], "has dtype int32, not a float type"),
    ("finetune", ["wnut17", *NER, "--checkpoint", "{hf_nan}"], "holds NaN or inf"),
    ("finetune", ["wnut17", *NER, "--checkpoint", "{hf_eps}"], "layer_norm_eps must be a small positive number"),
    ("finetune", ["wnut17", *NER, "--checkpoint", "{run_int}"], "has dtype int32, not a float type"),
    ("finetune", ["wnut17", *NER, "--checkpoint", "{run_nan}"], "holds NaN or inf: the run diverged"),
    ("finetune_qa", [*FINETUNE, "--checkpoint", "{run_nan}"], "holds NaN or inf: the run diverged"),
    ("finetune_qa", [*FINETUNE, "--checkpoint", "{run_int}"], "has dtype int32"),
    ("finetune_qa", [*FINETUNE, "--checkpoint", "{hf_nan}"], "holds NaN or inf"),
    ("finetune_qa", [*FINETUNE, "--checkpoint", "{hf_eps}"], "layer_norm_eps"),
    ("train", [*TRAIN, "--resume", "{run_nan}", "--steps", "4"], "holds NaN or inf: the run diverged"),
    ("train", [*TRAIN, "--resume", "{run_int}", "--steps", "4"], "has dtype int32, not a float type"),
    ("export_hf", ["--checkpoint", "{run_int}", "--out", "{root}/x"], "has dtype int32"),
    ("export_hf", ["--random-init", "micro", "--tokenizer", "{corpus}", "--out", "{root}/x"],
     "corpus.txt is not a readable tokenizer.json"),
    ("export_hf", ["--checkpoint", "{run}", "--out", "{root}/x", "--dtype", "float16"], "invalid choice: 'float16'"),
    ("predict_qa", [*PREDICT, "--model", "{hf_int}"], "has dtype int32"),
    ("predict_qa", [*PREDICT, "--out", "{hf}"], "is a folder: name a file to write"),
    ("predict_qa", [*PREDICT, "--model", "{root}/runs/none"], "model folder {root}/runs/none does not exist"),
    ("fill_mask", ["--model", "{hf_qa}", "the [MASK] sat ."], "has no MLM head"),
    ("fill_mask", ["--model", "{run_nan}", "the [MASK] sat ."], "is a minispanbert run folder"),
    ("compare_objectives", [*COMPARE, "--out", "{root}/x", "--seeds", "one"], "--seeds"),
    ("compare_objectives", [*COMPARE, "--out", "{root}/x", "--lr", "nan"], "--lr a positive number"),
    ("compare_objectives", [*COMPARE, "--out", "{root}/x", "--finetune", "squad"], "--finetune squad: choose from"),
    ("coursework", ["grade", "{empty_dir}", "--autograder", "{root}/nowhere"], "is not a built autograder"),
    ("coursework", ["build", "A9", "--out", "{root}/x"], "A9"),
    ("coursework", ["submit", "--root", "{root}/nowhere"], "has no coursework.json"),
]
def coursework_cli(argv):
    """coursework's main returns its exit status (it writes a results.json before it fails)."""
    code = coursework_main(argv)
    if code:
        raise SystemExit(code)


MAINS = {"train": train.main, "finetune_qa": finetune_qa.main, "evaluate_qa": evaluate_qa.main,
         "data": data_cli.main, "bench": bench.main, "check_gradients": check_gradients.main,
         "finetune": finetune_main, "predict_qa": predict_qa_main, "fill_mask": fill_mask_main,
         "export_hf": export_hf_main, "compare_objectives": compare_objectives_main, "coursework": coursework_cli}


def cli_of(case) -> str:
    return case.values[0] if hasattr(case, "values") else case[0]


def test_the_battery_is_large_and_covers_every_cli():
    assert len(CASES) >= 110
    assert {cli_of(case) for case in CASES} == set(MAINS)


@pytest.mark.parametrize("cli, argv, expected", CASES, ids=[f"{cli_of(c)}-{i}" for i, c in enumerate(CASES)])
def test_bad_input_is_one_line_and_changes_nothing(ws, cli, argv, expected, monkeypatch):
    monkeypatch.setenv("MINISPANBERT_FUSED_CPU", "0")  # the plain ops: no numba start-up for these tiny runs
    argv = [arg.format(**ws) for arg in argv]
    before = snapshot(ws["root"])
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err), pytest.raises(SystemExit) as exc:
        MAINS[cli](argv)
    code = exc.value.code
    stderr = err.getvalue() + (code + "\n" if isinstance(code, str) else "")  # sys.exit(str) prints it
    assert code not in (0, None), f"exit status 0 for {argv}"
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error: ") and "Traceback" not in stderr
    assert expected.format(**ws) in lines[0], lines[0]
    assert snapshot(ws["root"]) == before, "a file of an earlier run changed"
    for leftover in ("new", "qa-new", "q", "d", "ft-new", "x", "no_folder"):  # no half-made output folder
        assert not any((ws["root"] / leftover).rglob("*")) if (ws["root"] / leftover).exists() else True


def test_the_commands_the_cases_break_do_run(ws, tmp_path, capsys):
    """The valid versions of the battery's base commands succeed, so each case fails for its own flag."""
    train.main([arg.format(**ws) for arg in TRAIN] + ["--out", str(tmp_path / "new")])
    finetune = [arg.format(**ws) for arg in FINETUNE]
    finetune[finetune.index("--out") + 1] = str(tmp_path / "qa-new")
    result = finetune_qa.main(finetune)
    assert set(result["scores"]["dev split"]) >= {"exact_match", "f1"}
    assert evaluate_qa.main([str(tmp_path / "qa-new" / "gold.json"), str(tmp_path / "qa-new" / "predictions.json")])
