"""One-shot GPU check: every GPU fact the README needs, in one call, in under 8 minutes on an H100.

    .ci/gpu OUTDIR              run it (needs CuPy and a CUDA device; PyTorch with CUDA for the yardstick)
    .ci/gpu --dry-run OUTDIR    on a machine without a GPU: every GPU section is skipped with the reason
    .ci/gpu --rehearse OUTDIR   every section on NumPy at toy sizes (checks this script itself, on a CPU)

Sections, each in its own process with its own time budget (together 7 min 55 s at most); a failure
or a timeout is recorded and the next section runs anyway:

  environment  versions of Python, NumPy, CuPy, PyTorch, the device (nvidia-smi) and the git commit
  parity       max |CuPy - NumPy| of every op (check_gradients.op_cases, forward and backward, plain
               and fused), and of the whole pretraining loss and gradients, in float32 and float64:
               the numbers that calibrate the float32 parity tolerance (conftest.TOLERANCES)
  parity-tests pytest of the CuPy parity tests (layers, encoder, model, fused kernels)
  train        the same --dropout 0 run on NumPy (a few steps) and on CuPy (a few hundred): the first
               losses must agree (the batches are masked on the host from the same seed)
  bench-small, bench-base   bench --backend cupy --compare-torch: PyTorch eager fp32 on the same GPU in
               a separate process; tokens/s of both, the ratio, the peak device memory of both

Writes OUTDIR/gpu-report.md and OUTDIR/gpu-report.json, plus each section's log and JSON.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TARGET_RATIO, TARGET_MEMORY = 1.2, 1.2  # issue 18: CuPy >= 1.2x PyTorch eager fp32, peak memory <= 1.2x PyTorch's
TRAIN_COMPARE_STEPS = 5
LOSS_RTOL = 1e-3  # float32 losses of two backends over the first few steps (different BLAS orderings)


# --------------------------------------------------------------------------- sections run in a child process


def device_backend(rehearse: bool):
    from minispanbert.backend import get_backend

    return get_backend("numpy" if rehearse else "cupy")


def max_differences(a, b) -> dict:
    import numpy as np

    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    abs_diff = float(np.max(np.abs(a - b))) if a.size else 0.0
    scale = float(np.max(np.abs(b))) if b.size else 0.0
    return {"max_abs": abs_diff, "max_rel_to_max": abs_diff / scale if scale else 0.0}


def section_parity(args) -> dict:
    """Every op of check_gradients.op_cases and the whole pretraining step, NumPy vs the device."""
    import numpy as np

    from minispanbert.backend import to_numpy
    from minispanbert.engine import check_gradients, kernels
    from minispanbert.engine.bench import bench
    from minispanbert.model.spanbert_loss import SpanBertForPretraining

    dev = device_backend(args.rehearse)
    results = {"ops": {}, "model": {}}
    for dtype in ("float32", "float64"):
        rng = np.random.default_rng(0)
        for name, (inputs, forward, backward, _) in check_gradients.op_cases(rng).items():
            host = {k: (v.astype(dtype) if v.dtype.kind == "f" else v) for k, v in inputs.items()}
            out_ref, cache_ref = forward(np, **host)
            dout = np.random.default_rng(1).standard_normal(np.shape(out_ref)).astype(dtype)
            grads_ref = backward(np, dout.copy(), cache_ref)
            with kernels.installed():  # the device runs what the commands run: the fused kernels
                out_dev, cache_dev = forward(dev, **{k: dev.asarray(v) for k, v in host.items()})
                grads_dev = backward(dev, dev.asarray(dout), cache_dev)
            worst = max_differences(to_numpy(out_dev), out_ref)
            for g_dev, g_ref in zip(grads_dev, grads_ref):
                d = max_differences(to_numpy(g_dev), g_ref)
                worst = {k: max(worst[k], d[k]) for k in worst}
            results["ops"][f"{name}/{dtype}"] = worst
        cfg = bench.bench_config(bench.parse_args(["--preset", "tiny", "--batch-size", "8", "--dropout", "0"]))
        model_config = cfg.model_config()
        batch = bench.synthetic_batch(cfg, model_config)
        ref = SpanBertForPretraining.initialise(model_config, seed=0, xp=np, dtype=dtype)
        on_dev = SpanBertForPretraining(model_config, {k: dev.asarray(v) for k, v in ref.params.items()}, xp=dev)
        out_ref, cache_ref = ref.forward(batch)
        grads_ref = ref.backward(cache_ref)
        with kernels.installed():
            out_dev, cache_dev = on_dev.forward(batch)
            grads_dev = on_dev.backward(cache_dev)
        grad_worst = {"max_abs": 0.0, "max_rel_to_max": 0.0}
        for name in grads_ref:
            d = max_differences(to_numpy(grads_dev[name]), grads_ref[name])
            grad_worst = {k: max(grad_worst[k], d[k]) for k in d}
        results["model"][dtype] = {"loss": max_differences(to_numpy(out_dev.loss), to_numpy(out_ref.loss)),
                                   "gradients": grad_worst}
    f32 = [v["max_rel_to_max"] for k, v in results["ops"].items() if k.endswith("float32")]
    results["suggested_float32_rtol"] = float(f"{max(4 * max(f32), 1e-6):.1g}")
    return results


def section_environment(args) -> dict:
    import numpy as np

    info = {"python": platform.python_version(), "numpy": np.__version__, "platform": platform.platform()}
    try:
        import cupy

        info["cupy"] = cupy.__version__
        info["cuda_runtime"] = cupy.cuda.runtime.runtimeGetVersion()
        info["device"] = cupy.cuda.runtime.getDeviceProperties(0)["name"].decode()
    except Exception as exc:  # the report says what is missing; the other sections say why they skip
        info["cupy"] = f"unavailable ({type(exc).__name__}: {exc})"
    try:
        import torch

        info["torch"] = torch.__version__
        info["torch_cuda"] = torch.cuda.is_available()
    except ImportError:
        info["torch"] = "not installed"
    if shutil.which("nvidia-smi"):
        info["nvidia_smi"] = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True).stdout.strip()
    info["git_commit"] = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True,
                                        text=True).stdout.strip() or "unknown"
    return info


SECTION_FUNCTIONS = {"environment": section_environment, "parity": section_parity}


# --------------------------------------------------------------------------- the runner


def gpu_missing_reason() -> str | None:
    """None when CuPy sees a CUDA device, else why not (get_backend's one-line message)."""
    sys.path.insert(0, str(REPO))
    from minispanbert.backend import get_backend

    try:
        get_backend("cupy")
    except ValueError as exc:
        return str(exc)
    return None


def write_corpus(folder: Path) -> Path:
    """A small English corpus from this repository's own Markdown (no download on a GPU box)."""
    folder.mkdir(parents=True, exist_ok=True)
    for i, path in enumerate(sorted(REPO.glob("**/*.md"))):
        if ".git" not in path.parts and "runs" not in path.parts:
            (folder / f"doc{i:03d}.txt").write_text(path.read_text(errors="replace"))
    return folder


def plan(args, out: Path) -> list[dict]:
    """The sections: name, budget (s), command, whether it needs the GPU, and the JSON it writes."""
    py, me = sys.executable, str(Path(__file__).resolve())
    backend = "numpy" if args.rehearse else "cupy"
    small = ["--preset", "tiny", "--batch-size", "4", "--seq-len", "64", "--steps", "2", "--warmup-steps", "1",
             "--rounds", "1"] if args.rehearse else ["--preset", "small", "--batch-size", "32", "--steps", "10", "--rounds", "2"]
    base = ["--preset", "tiny", "--batch-size", "4", "--seq-len", "64", "--steps", "2", "--warmup-steps", "1",
            "--rounds", "1"] if args.rehearse else ["--preset", "base", "--batch-size", "32", "--steps", "8", "--rounds", "2"]
    steps = 20 if args.rehearse else 300
    size = ["--preset", "tiny", "--batch-size", "4" if args.rehearse else "16", "--seq-len", "64" if args.rehearse else "128"]
    corpus = str(out / "corpus")
    train_common = [py, "-m", "minispanbert.train", *size, "--data", corpus, "--dropout", "0", "--seed", "0",
                    "--eval-every", "100000", "--save-every", "100000", "--warmup", str(TRAIN_COMPARE_STEPS), "--log-every", "1", "--overwrite"]
    tests = ["tests/core/test_layers.py", "tests/core/test_encoder.py", "tests/core/test_spanbert_model.py",
             "tests/engine/test_kernels_cuda.py"]
    return [
        dict(name="environment", budget=30, gpu=False,
             command=[py, me, "--section", "environment", "--json", str(out / "environment.json")]),
        dict(name="parity", budget=60, gpu=True,
             command=[py, me, "--section", "parity", "--json", str(out / "parity.json")]
             + (["--rehearse"] if args.rehearse else [])),
        dict(name="parity-tests", budget=80, gpu=True,
             command=[py, "-m", "pytest", "-q", "-x", *tests] + (["-k", "not cupy"] if args.rehearse else ["-k", "cupy"])),
        dict(name="train-numpy", budget=45, gpu=False, needs_gpu_run=True,
             command=train_common + ["--backend", "numpy", "--steps", str(TRAIN_COMPARE_STEPS), "--out", str(out / "train-numpy")]),
        dict(name="train-cupy", budget=90, gpu=True, tokenizer_from=out / "train-numpy",
             command=train_common + ["--backend", backend, "--steps", str(steps), "--out", str(out / "train-cupy")]),
        dict(name="bench-small", budget=70, gpu=True,
             command=[py, "-m", "minispanbert.bench", "--backend", backend, *small, "--compare-torch",
                      "--json", str(out / "bench-small.json")]),
        dict(name="bench-base", budget=100, gpu=True,
             command=[py, "-m", "minispanbert.bench", "--backend", backend, *base, "--compare-torch",
                      "--json", str(out / "bench-base.json")]),
    ]


def run_section(section: dict, out: Path, skip_reason: str | None) -> dict:
    record = {"name": section["name"], "budget_s": section["budget"], "command": " ".join(section["command"])}
    if skip_reason is not None and (section["gpu"] or section.get("needs_gpu_run")):
        return {**record, "status": "skipped", "reason": skip_reason}
    tokenizers = sorted(Path(section["tokenizer_from"]).glob("checkpoints/step-*/tokenizer.json")) \
        if section.get("tokenizer_from") else []
    if tokenizers:  # the NumPy run's: a freshly trained one may number the pieces differently
        section = {**section, "command": section["command"] + ["--tokenizer", str(tokenizers[-1])]}
        record["command"] = " ".join(section["command"])
    log = out / f"{section['name']}.log"
    start = time.perf_counter()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    try:
        done = subprocess.run(section["command"], cwd=REPO, env=env, capture_output=True, text=True,
                              timeout=section["budget"])
        log.write_text(done.stdout + done.stderr)
        status = "ok" if done.returncode == 0 else f"failed (exit {done.returncode})"
        tail = (done.stdout + done.stderr).strip().splitlines()[-3:]
    except subprocess.TimeoutExpired as exc:
        log.write_text(f"{exc.stdout or ''}{exc.stderr or ''}" if isinstance(exc.stdout, str) else "")
        status, tail = f"timed out after {section['budget']} s", []
    return {**record, "status": status, "seconds": round(time.perf_counter() - start, 1), "log": log.name,
            "tail": tail}


def read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def first_losses(run_folder: Path, n: int) -> list[float]:
    rows = []
    try:
        for line in (run_folder / "metrics.jsonl").read_text().splitlines():
            record = json.loads(line)
            if record.get("split") == "train" and "loss" in record:
                rows.append(record["loss"])
    except (OSError, ValueError):
        pass
    return rows[:n]


def summarise(out: Path, records: list[dict]) -> dict:
    """Collect the facts the README needs from what the sections wrote."""
    facts = {"environment": read_json(out / "environment.json"), "parity": read_json(out / "parity.json")}
    ours, cupy = first_losses(out / "train-numpy", TRAIN_COMPARE_STEPS), first_losses(out / "train-cupy", 10**6)
    if ours and cupy:
        agree = all(abs(a - b) <= LOSS_RTOL * abs(a) for a, b in zip(ours, cupy))
        facts["train"] = {"numpy_first_losses": ours, "device_first_losses": cupy[:len(ours)],
                          "device_steps": len(cupy), "device_last_loss": cupy[-1], "first_losses_agree": agree}
    for name in ("bench-small", "bench-base"):
        r = read_json(out / f"{name}.json")
        if r and r.get("torch") and "skipped" not in r["torch"]:
            t = r["torch"]
            ours_mem, torch_mem = r.get("device_pool_peak_bytes"), t.get("device_peak_reserved_bytes")
            facts[name] = {"preset": r["preset"], "batch_size": r["batch_size"], "tokens_per_s": r["tokens_per_s"],
                           "torch_tokens_per_s": t["tokens_per_s"], "ratio": t["ratio_ours_over_torch"],
                           "ratio_target_met": t["ratio_ours_over_torch"] >= TARGET_RATIO,
                           "peak_device_bytes": ours_mem, "torch_peak_device_bytes": torch_mem,
                           "memory_ratio": ours_mem / torch_mem if ours_mem and torch_mem else None,
                           "losses_agree": t["losses_agree"], "how": t["method"]}
        elif r:
            facts[name] = {"tokens_per_s": r["tokens_per_s"], "torch": r.get("torch")}
    return facts


def markdown(report: dict) -> str:
    lines = [f"# GPU check ({report['mode']}), {report['finished']}", "",
             "| section | status | seconds | budget |", "|---|---|---|---|"]
    for r in report["sections"]:
        status = r["status"] + (f": {r['reason']}" if r.get("reason") else "")
        lines.append(f"| {r['name']} | {status} | {r.get('seconds', '')} | {r['budget_s']} |")
    facts = report["facts"]
    if facts.get("environment"):
        lines += ["", "## Environment", "", "```", json.dumps(facts["environment"], indent=1), "```"]
    if facts.get("parity"):
        p = facts["parity"]
        lines += ["", "## Parity, max |device - NumPy| (relative to the largest |NumPy| value)", "",
                  "| op / dtype | max abs | max rel |", "|---|---|---|"]
        lines += [f"| {k} | {v['max_abs']:.3g} | {v['max_rel_to_max']:.3g} |" for k, v in p["ops"].items()]
        for dtype, m in p["model"].items():
            lines.append(f"| whole model {dtype}: loss | {m['loss']['max_abs']:.3g} | {m['loss']['max_rel_to_max']:.3g} |")
            lines.append(f"| whole model {dtype}: gradients | {m['gradients']['max_abs']:.3g} | "
                         f"{m['gradients']['max_rel_to_max']:.3g} |")
        lines.append(f"\nSuggested float32 parity rtol (4x the worst op): {p['suggested_float32_rtol']}")
    if facts.get("train"):
        t = facts["train"]
        lines += ["", "## Training", "", f"first losses NumPy {t['numpy_first_losses']}",
                  f"first losses device {t['device_first_losses']} -> agree: {t['first_losses_agree']}",
                  f"device run: {t['device_steps']} steps, last loss {t['device_last_loss']:.4f}"]
    for name in ("bench-small", "bench-base"):
        b = facts.get(name)
        if b and "ratio" in b:
            mem = "n/a" if b["memory_ratio"] is None else f"{b['memory_ratio']:.2f}x"
            lines += ["", f"## {name}", "",
                      f"{b['preset']} batch {b['batch_size']}: ours {b['tokens_per_s']:,.0f} tok/s, PyTorch eager fp32 "
                      f"{b['torch_tokens_per_s']:,.0f} tok/s, ratio {b['ratio']:.2f}x (target {TARGET_RATIO}x: "
                      f"{'met' if b['ratio_target_met'] else 'not met'}); peak device memory ours/torch {mem} "
                      f"(target <= {TARGET_MEMORY}x); losses agree: {b['losses_agree']}", f"how: {b['how']}"]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog=".ci/gpu", description=__doc__.split("\n\n")[0])
    p.add_argument("outdir", nargs="?", help="folder for the reports (created)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--dry-run", action="store_true", help="no GPU needed: skip the GPU sections with the reason")
    mode.add_argument("--rehearse", action="store_true", help="run every section on NumPy at toy sizes")
    p.add_argument("--only", nargs="*", default=None, help="run only these sections")
    p.add_argument("--section", default=None, help=argparse.SUPPRESS)  # a child: run one section in-process
    p.add_argument("--json", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.section:
        sys.path.insert(0, str(REPO))
        result = SECTION_FUNCTIONS[args.section](args)
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
        return 0
    if not args.outdir:
        print("error: give the folder for the reports: .ci/gpu OUTDIR", file=sys.stderr)
        return 2
    out = Path(args.outdir)
    out.mkdir(parents=True, exist_ok=True)
    skip_reason = None
    if args.dry_run:
        skip_reason = f"dry run: {gpu_missing_reason() or 'a GPU is present, but --dry-run skips it'}"
    elif not args.rehearse:
        missing = gpu_missing_reason()
        if missing:
            skip_reason = f"no GPU: {missing}"
    write_corpus(out / "corpus")
    records = []
    for section in plan(args, out):
        if args.only and section["name"] not in args.only:
            continue
        record = run_section(section, out, skip_reason)
        print(f"{record['name']}: {record['status']}" + (f" ({record['reason']})" if record.get("reason") else "")
              + (f" in {record['seconds']} s" if "seconds" in record else ""), flush=True)
        records.append(record)
    report = {"mode": "dry run" if args.dry_run else "rehearsal on NumPy" if args.rehearse else "GPU",
              "finished": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "sections": records, "facts": summarise(out, records)}
    (out / "gpu-report.json").write_text(json.dumps(report, indent=1) + "\n")
    (out / "gpu-report.md").write_text(markdown(report))
    print(f"reports: {out / 'gpu-report.md'} and {out / 'gpu-report.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
