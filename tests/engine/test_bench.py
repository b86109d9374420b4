"""The benchmark CLI: a smoke run on CPU with its report and JSON fields, the FLOP formula against a
hand count, the per-op profiler's bookkeeping, one-line errors (a nan loss among them), (if PyTorch
is installed) the --compare-torch run whose first-step losses must agree, and the accuracy of the
fast float32 erf that the speed work put into backend.erf."""
import json

import numpy as np
import pytest
from scipy.special import erf as scipy_erf

from minispanbert.backend import erf
from minispanbert.config import ModelConfig
from minispanbert.engine.bench import bench
from minispanbert.engine.kernels import adamw as installed_optimizer
from minispanbert.engine.parallel.threads import cpu_threads, set_cpu_threads
from minispanbert.layers import attention, linear

SMALL_RUN = ["--preset", "tiny", "--batch-size", "2", "--seq-len", "32", "--steps", "2", "--warmup-steps", "1"]


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    """One benchmark run shared by the tests that only read its report."""
    path = tmp_path_factory.mktemp("bench") / "report.json"
    result = bench.main(SMALL_RUN + ["--json", str(path)])
    return result, json.loads(path.read_text())


def test_smoke_run_reports_every_field(smoke, capsys):
    result, saved = smoke
    for key in ("step_ms", "tokens_per_s", "forward_ms", "backward_ms", "optimizer_ms", "achieved_gflops",
                "peak_gflops_measured", "mfu", "profile", "host_peak_rss_bytes", "flops_per_step",
                "mlm_targets", "sbo_targets", "threads", "task", "cpu", "peak_blas_threads", "torch_compiled"):
        assert key in saved, key
    assert saved["tokens_per_step"] == 2 * 32
    assert len(saved["step_ms_all"]) == 2
    assert saved["tokens_per_s"] == pytest.approx(64 / (saved["step_ms"] / 1e3))
    assert 0 < saved["forward_ms"] and 0 < saved["backward_ms"] and 0 < saved["optimizer_ms"]
    assert saved["mfu"] == pytest.approx(saved["achieved_gflops"] / saved["peak_gflops_measured"])
    assert saved["host_peak_rss_bytes"] > 10 * 2**20
    assert saved["device_pool_peak_bytes"] is None  # NumPy has no device pool
    assert saved["torch"] is None
    # 15% of 30 maskable tokens per row, rounded up: 5 per row (span/word masking hits it exactly)
    assert saved["mlm_targets"] == 2 * 5
    report = bench.format_report(result)
    for text in ("tokens/s", "forward", "backward", "AdamW", "GFLOP/s", "MFU", "host RSS", "per-op self time"):
        assert text in report, text


def test_profile_counts_every_linear_call_and_restores_the_functions(smoke):
    _, saved = smoke
    rows = {row["op"]: row for row in saved["profile"]}
    assert len(saved["profile"]) <= bench.PROFILE_TOP + 1
    # per layer: Q, K, V, O, FFN in, FFN out = 6; MLM: transform + decoder = 2; SBO: 2 MLP + decoder = 3
    layers = 2  # tiny preset
    assert rows["linear_forward"]["calls"] == 6 * layers + 5
    assert rows["linear_backward"]["calls"] == 6 * layers + 5
    assert sum(row["ms"] for row in saved["profile"]) <= saved["profile_step_ms"] * 1.001
    # the optimizer is timed where train_step reaches it (optim.clip_and_step), not lost in "outside"
    assert rows["clip_and_step"]["calls"] == 1  # a quarter of this tiny step: always in the top 10
    # the timers are gone after the profiled step
    assert attention.linear_forward is linear.linear_forward
    assert not hasattr(attention.self_attention_forward, "__wrapped__")


def test_flop_formula_matches_a_hand_count():
    c = ModelConfig(vocab_size=50, hidden_size=8, num_hidden_layers=3, num_attention_heads=2,
                    intermediate_size=16, max_position_embeddings=16, sbo_position_dim=4, sbo_max_targets=5)
    B, T, N, P = 2, 6, 3, 4
    # Every product of the forward pass as (m, k, n); training costs 3 x 2mkn (forward + dx + dW).
    products = []
    for _ in range(3):                                     # layers
        products += [(B * T, 8, 8)] * 4                    # Q, K, V, O projections
        products += [(T, 4, T)] * (B * 2)                  # scores per sequence and head (D = 4)
        products += [(T, T, 4)] * (B * 2)                  # probabilities @ V per sequence and head
        products += [(B * T, 8, 16), (B * T, 16, 8)]       # feed-forward
    products += [(N, 8, 8), (N, 8, 50)]                    # MLM transform and decoder
    products += [(P, 2 * 8 + 4, 8), (P, 8, 8), (P, 8, 50)]  # SBO MLP and decoder
    hand = sum(3 * 2 * m * k * n for m, k, n in products)
    flops = bench.training_flops(c, batch_size=B, seq_len=T, mlm_targets=N, sbo_targets=P)
    assert flops["total"] == hand
    assert flops["total"] == sum(v for k, v in flops.items() if k != "total")


def test_synthetic_blocks_look_like_wordpiece_text():
    blocks, starts = bench.synthetic_blocks(4, 200, 1000, np.random.default_rng(0))
    ids = np.concatenate(blocks)
    assert ids.min() >= 5 and ids.max() < 1000          # ordinary tokens only
    assert all(s[0] for s in starts)
    pieces_per_word = ids.size / sum(int(s.sum()) for s in starts)
    assert 1.2 < pieces_per_word < 1.6                   # E = 1.41 for WORD_PIECES_PMF
    counts = np.bincount(ids)
    assert counts[5] > 10 * np.median(counts[counts > 0])  # Zipf: the top rank dominates


def test_threads_flag_sets_numpys_blas_threads_in_the_running_process():
    threadpoolctl = pytest.importorskip("threadpoolctl")
    before = cpu_threads()
    try:
        result = bench.main(SMALL_RUN + ["--threads", "1", "--clock", "cpu"])
        assert result["threads"] == 1 and cpu_threads() == 1
        blas = [pool for pool in threadpoolctl.threadpool_info() if pool["user_api"] == "blas"]
        assert blas and all(pool["num_threads"] == 1 for pool in blas)
    finally:
        set_cpu_threads(before)


INTEL_CPUINFO = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz
flags\t\t: fpu sse2 avx avx2 avx512f avx512bw amx_bf16 amx_tile
bugs\t\t: spectre_v1

processor\t: 1
model name\t: Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz
flags\t\t: fpu sse2 avx avx2 avx512f avx512bw amx_bf16 amx_tile
"""


def test_cpu_model_and_widest_isa_come_from_cpuinfo():
    assert bench.cpu_from_cpuinfo(INTEL_CPUINFO) == {
        "model": "Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz", "isa": "AMX"}
    no_amx = INTEL_CPUINFO.replace(" amx_tile", "")
    assert bench.cpu_from_cpuinfo(no_amx)["isa"] == "AVX-512"  # amx_bf16 alone is not the tile unit
    epyc = "model name\t: AMD EPYC 7B13 64-Core Processor\nflags\t\t: sse2 avx avx2 fma\n"
    assert bench.cpu_from_cpuinfo(epyc) == {"model": "AMD EPYC 7B13 64-Core Processor", "isa": "AVX2"}
    assert bench.cpu_from_cpuinfo("flags\t: sse2 avx\n") == {"model": None, "isa": "below AVX2"}
    assert bench.cpu_from_cpuinfo("Features\t: fp asimd\nCPU part\t: 0xd0c\n") == {"model": None, "isa": None}


def test_table_names_the_cpu_threads_torch_date_and_command(monkeypatch):
    monkeypatch.setattr(bench, "machine_cpu", lambda: {"model": "Some CPU", "isa": "AVX2"})
    argv = ["--table", "--threads", "2"]
    line = bench.table_provenance(bench.parse_args(argv), argv)
    assert line.startswith("CPU Some CPU (AVX2), 2 threads, PyTorch ")
    assert line.endswith(": python -m minispanbert.bench --table --threads 2")
    assert str(__import__("datetime").date.today()) in line


def test_the_peak_gemm_runs_blas_on_every_thread_the_split_step_uses(monkeypatch):
    """A split batch runs one-thread BLAS per shard; the peak it is measured against must be BLAS on
    all the threads, or MFU compares two cores' work with one core's peak."""
    threadpoolctl = pytest.importorskip("threadpoolctl")
    seen = []
    real_peak = bench.measure_peak_gflops

    def recording_peak(xp, **kwargs):
        seen.append([pool["num_threads"] for pool in threadpoolctl.threadpool_info() if pool["user_api"] == "blas"])
        return real_peak(xp, **kwargs)

    monkeypatch.setattr(bench, "measure_peak_gflops", recording_peak)
    before = cpu_threads()
    try:
        result = bench.main(SMALL_RUN + ["--threads", "2", "--steps", "1", "--warmup-steps", "0"])
    finally:
        set_cpu_threads(before)
    assert result["split_batch"] and seen and all(set(counts) == {2} for counts in seen), seen
    assert result["peak_blas_threads"] == 2


def test_bad_flags_are_one_line_errors():
    with pytest.raises(SystemExit, match="error: --compare-torch runs without dropout"):
        bench.main(SMALL_RUN + ["--compare-torch", "--dropout", "0.1"])
    with pytest.raises(SystemExit, match="error: --seq-len 1000"):
        bench.main(["--seq-len", "1000"])


def test_a_non_finite_loss_stops_the_bench_with_one_line(monkeypatch):
    """train_step no longer checks the loss; the bench reads it after the step and refuses nan."""
    real_forward = bench.SpanBertForPretraining.forward

    def poisoned(self, batch, **kwargs):
        out, cache = real_forward(self, batch, **kwargs)
        out.loss = out.loss * np.nan
        out.mlm_loss = out.mlm_loss * np.nan  # a batch split over threads rebuilds the loss from the heads'
        return out, cache

    monkeypatch.setattr(bench.SpanBertForPretraining, "forward", poisoned)
    with pytest.raises(SystemExit, match=r"^error: the loss became nan at benchmark step 0: this is a bug") as exc:
        bench.main(SMALL_RUN)
    assert "\n" not in str(exc.value)


def test_compare_torch_without_torch_says_skipped(monkeypatch, capsys):
    monkeypatch.setattr(bench, "import_torch", lambda: None)
    result = bench.main(SMALL_RUN + ["--compare-torch"])
    assert result["torch"] == {"skipped": "PyTorch is not installed: --compare-torch skipped"}
    assert "skipped" in capsys.readouterr().out


def test_compare_torch_runs_each_engine_in_its_own_process_and_the_losses_agree(capsys, monkeypatch):
    """The fair yardstick: two rounds, each engine in a fresh process (never this one), the order of
    the engines rotating, on the same weights and batch read from files; the losses agree, so both
    ran the same computation. Here the torch.compile process fails (as on a machine without a C++
    compiler; compiling for real takes minutes): the report says so in one line, tries it once, and
    the eager columns stand."""
    import os

    pytest.importorskip("torch")
    real_run, started = bench.run_engine_process, []

    def compile_fails(engine, *args, **kwargs):
        started.append(engine)
        if engine == "torch-compile":
            raise ValueError("the torch-compile benchmark process failed: error: did not compile: "
                             "RuntimeError: no C++ compiler")
        return real_run(engine, *args, **kwargs)

    monkeypatch.setattr(bench, "run_engine_process", compile_fails)
    result = bench.main(SMALL_RUN + ["--compare-torch", "--steps", "1", "--rounds", "2"])
    assert started == ["numpy", "torch", "torch-compile", "torch", "numpy"]
    assert result["torch_compiled"] == {"skipped": "did not compile: RuntimeError: no C++ compiler"}
    t = result["torch"]
    assert t["losses_agree"], (t["first_loss_ours"], t["first_loss_torch"])
    # the same weights, batch and AdamW steps: the second step (after one identical update) agrees too
    assert t["losses"][1] == pytest.approx(result["losses"][1], rel=1e-3)
    pids = t["pids"]["numpy"] + t["pids"]["torch"]
    assert len(set(pids)) == 4 and os.getpid() not in pids
    assert len(t["round_ratios"]) == 2 and len(t["step_ms_all"]) == 2 and len(result["step_ms_all"]) == 2
    assert t["ratio_ours_over_torch"] == pytest.approx(result["tokens_per_s"] / t["tokens_per_s"])
    assert t["optimizer"] in ("fused AdamW", "foreach AdamW")
    out = capsys.readouterr().out
    assert "ratio ours/torch" in out and "each engine in a fresh process" in out
    assert "torch.compile: did not compile: RuntimeError: no C++ compiler" in out
    cells = [cell.strip() for cell in bench.format_table_row(result).split("|")[1:-1]]
    assert len(cells) == bench.TABLE_HEADER.splitlines()[0].count("|") - 1
    assert float(cells[4].replace(",", "")) == pytest.approx(t["tokens_per_s"], abs=1)  # eager tok/s
    assert cells[7] == "True" and cells[8] == "did not compile: RuntimeError: no C++ compiler" and cells[9] == ""


def test_torch_compile_failures_are_one_line(tmp_path, monkeypatch):
    """The torch.compile child: an error from the compiled code (inductor's come at the first call)
    ends the process with "did not compile: <type>: <first line>"; a process past its time says so."""
    import subprocess

    torch = pytest.importorskip("torch")

    def compile_that_fails(fn):
        def compiled(*args, **kwargs):
            raise RuntimeError("CppCompileError: C++ compile error\nCommand: g++ /tmp/x.cpp -o x.so")
        return compiled

    monkeypatch.setattr(torch, "compile", compile_that_fails)
    args = bench.parse_args(SMALL_RUN + ["--compare-torch"])
    work = bench.workload_for(args)
    bench.write_handoff(tmp_path, work.params(np), work.batch())
    child = bench.engine_argv(args, torch.get_num_threads()) + ["--handoff", str(tmp_path)]
    one_line = r"^error: did not compile: RuntimeError: CppCompileError: C\+\+ compile error$"
    with pytest.raises(SystemExit, match=one_line):
        bench.main(child + ["--engine", "torch-compile"])
    assert bench.compile_failure(subprocess.TimeoutExpired(["python"], 600)) == \
        "did not compile: no result within --process-timeout 600 s"


def test_finetuning_step_and_its_torch_twin_start_from_the_same_loss(tmp_path, monkeypatch):
    """The SST-2 row: our fine-tuning step (the task's forward/backward on 2 shards, clip_and_step) and
    the PyTorch sequence-classification twin, each run as --compare-torch runs its processes (flags
    from engine_argv, weights and batch from the handoff files), on the same weights and batch."""
    pytest.importorskip("torch")
    args = bench.parse_args(["--task", "sst2", "--preset", "tiny", "--batch-size", "4", "--seq-len", "16",
                             "--steps", "1", "--warmup-steps", "1", "--compare-torch"])
    work = bench.workload_for(args)
    bench.write_handoff(tmp_path, work.params(np), work.batch())
    child = bench.engine_argv(args, 2) + ["--handoff", str(tmp_path)]
    before, kernel_steps, kernel = cpu_threads(), [], installed_optimizer.clip_and_step
    monkeypatch.setattr(installed_optimizer, "clip_and_step", lambda *a, **k: kernel_steps.append(1) or kernel(*a, **k))
    try:
        ours = bench.main(child + ["--engine", "numpy"])
    finally:
        set_cpu_threads(before)
    twin = bench.main(child + ["--engine", "torch"])
    assert ours["task"] == "sst2" and ours["split_batch"] and ours["labels"] == 2
    assert len(kernel_steps) >= 2  # the command's optimizer phase (engine/kernels/adamw.py), not the textbook's
    assert ours["losses"][0] == pytest.approx(twin["losses"][0], rel=bench.LOSS_RTOL)
    assert ours["losses"][1] == pytest.approx(twin["losses"][1], rel=1e-3)  # after one identical update


def test_handoff_files_round_trip(tmp_path):
    cfg = bench.bench_config(bench.parse_args(SMALL_RUN))
    model_config = cfg.model_config()
    batch = bench.synthetic_batch(cfg, model_config)
    params = bench.init_pretraining_params(model_config, 0, xp=np)
    bench.write_handoff(tmp_path, params, batch)
    loaded_params, loaded_batch = bench.read_handoff(tmp_path, xp=np)
    assert all(np.array_equal(loaded_params[k], params[k]) for k in params) and loaded_params.keys() == params.keys()
    for field in ("input_ids", "mlm_labels", "sbo_target", "sbo_left"):
        np.testing.assert_array_equal(getattr(loaded_batch, field), getattr(batch, field))


def test_fast_float32_erf_is_accurate_far_below_float32_training_noise():
    """The speed work replaced scipy's float32 erf (the tiny preset's largest elementwise cost) with
    a rational approximation; float64 still goes through scipy unchanged."""
    x = np.concatenate([np.linspace(-6, 6, 400_001, dtype=np.float32),
                        np.array([0.0, 1e-30, 3.9, 40.0, np.inf, -np.inf], dtype=np.float32)])
    exact = scipy_erf(x.astype(np.float64))
    fast = erf(x, xp=np)
    assert fast.dtype == np.float32
    assert np.max(np.abs(fast - exact)) < 1e-6        # ~16 float32 ulps of 1.0
    assert np.abs(fast).max() <= 1.0
    assert np.array_equal(erf(-x, xp=np), -fast)      # odd, as erf is
    assert np.isnan(erf(np.array([np.nan], dtype=np.float32), xp=np)[0])
    strided = x[:300_000].reshape(600, 500).T[:, ::3]  # evaluated block by block: layout must not matter
    np.testing.assert_array_equal(erf(strided, xp=np), erf(np.ascontiguousarray(strided), xp=np))
    x64 = x.astype(np.float64)
    assert np.array_equal(erf(x64, xp=np), scipy_erf(x64))
