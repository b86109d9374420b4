"""The batch split over threads (engine/parallel/shards.py, ``train --threads N``): for every
objective, N shards on N threads give the whole batch's losses, counts and every gradient (float64,
dropout off, uneven shards included); evaluation on threads equals evaluation on one; a run with
--threads 2 follows a run with --threads 1; parallel_for inside a worker runs serially."""
import dataclasses
import threading

import numpy as np
import pytest

from minispanbert import config as config_module
from minispanbert.config import ModelConfig
from minispanbert.engine import trainer as train
from minispanbert.engine.parallel import shards as thread_parallel
from minispanbert.engine.parallel import threads as thread_pool
from minispanbert.engine.trainer import RunConfig
from minispanbert.family.objectives import get_objective
from minispanbert.keyed_random import dropout_random
from minispanbert.model import encoder as encoder_module

from micro_runs import write_corpus

MICRO = ModelConfig(vocab_size=320, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                    intermediate_size=32, max_position_embeddings=32)
ROWS = 5  # split 2 ways (2 + 3) and 3 ways (1 + 2 + 2): uneven shards, different target counts


@pytest.fixture
def micro(monkeypatch):
    monkeypatch.setitem(config_module.PRESETS, "micro", MICRO)


@pytest.fixture
def three_threads(monkeypatch):
    """map_threads on three real threads, whatever the machine's cores."""
    monkeypatch.setattr(thread_pool, "_threads_set", 3)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_corpus(tmp_path_factory.mktemp("corpus") / "corpus.txt", documents=12, lines=6, words_per_line=(4, 10))


def model_and_batch(objective, corpus, seed=0):
    """A float64 micro model of ``objective`` and a real ROWS-row batch from its own batch builder."""
    cfg = RunConfig(objective=objective, preset="micro", data=str(corpus), batch_size=ROWS, seq_len=24,
                      dtype="float64", dropout=0.0, seed=seed)
    model_config = cfg.model_config()
    data = train.prepare_data(cfg, model_config, None, log=lambda _message: None)
    batch = train.batch_maker(cfg, model_config, data)(data.train_examples[:ROWS], np.random.default_rng(seed))
    model = get_objective(objective).initialise(model_config, seed=seed, xp=np, dtype="float64", cfg=cfg)
    return cfg, model, batch


def rel(a, b) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    error = float(np.max(np.abs(a - b) / np.maximum(1e-12, np.abs(a) + np.abs(b))))
    assert np.isfinite(error), "a NaN or inf where a number was expected"
    return error


@pytest.mark.parametrize("shards", [2, 3])
@pytest.mark.parametrize("objective", ["spanbert", "bert", "roberta", "albert", "electra"])
def test_shards_on_threads_give_the_whole_batch_loss_and_every_gradient(objective, shards, micro, corpus, three_threads):
    cfg, model, batch = model_and_batch(objective, corpus)
    module = get_objective(objective)
    weights = getattr(module, "term_weights", lambda _cfg: None)(cfg)
    whole, cache = model.forward(batch, train=True)
    whole_grads = model.backward(cache)
    out, grads = thread_parallel.forward_backward(model, batch, shards=shards, heads=module.HEADS, weights=weights)

    counts = [getattr(whole, f"{h}_count") for h in module.HEADS]
    assert all(c > 0 for c in counts), "the batch must exercise every head"
    assert rel(out.loss, whole.loss) < 1e-12
    for h in module.HEADS:
        assert rel(getattr(out, f"{h}_loss"), getattr(whole, f"{h}_loss")) < 1e-12, h
        assert getattr(out, f"{h}_count") == getattr(whole, f"{h}_count")
        assert int(getattr(out, f"{h}_correct")) == int(getattr(whole, f"{h}_correct"))
    for numerator, denominator in getattr(module, "RATIOS", {}).values():
        assert int(getattr(out, numerator)) == int(getattr(whole, numerator))
        assert int(getattr(out, denominator)) == int(getattr(whole, denominator))
    assert set(grads) == set(whole_grads)
    # per tensor, max |difference| over its own max |entry|; floored at 1e-6 of the largest gradient,
    # because some are exactly zero in exact arithmetic (attention key biases) and rounding noise here
    largest = max(float(np.max(np.abs(g))) for g in whole_grads.values())
    worst = max((float(np.max(np.abs(grads[n] - g))) / max(float(np.max(np.abs(g))), 1e-6 * largest), n)
                for n, g in whole_grads.items())
    assert np.isfinite(worst[0]) and worst[0] < 1e-10, worst


def test_shard_slices_cover_the_rows_once_in_near_equal_parts():
    for rows in range(1, 12):
        for shards in range(1, 6):
            parts = thread_parallel.shard_slices(rows, shards)
            assert len(parts) == min(rows, shards)
            covered = np.concatenate([np.arange(rows)[p] for p in parts])
            assert covered.tolist() == list(range(rows))
            sizes = [p.stop - p.start for p in parts]
            assert max(sizes) - min(sizes) <= 1


def test_term_scales_are_local_over_global_counts_and_zero_without_targets():
    scales = thread_parallel.term_scales([{"mlm": 3, "sbo": 0}, {"mlm": 1, "sbo": 0}])
    assert scales == [{"mlm": 0.75, "sbo": 0.0}, {"mlm": 0.25, "sbo": 0.0}]


def test_dropout_on_shards_give_the_loss_of_one_thread(micro, corpus, three_threads):
    cfg, model, batch = model_and_batch("spanbert", corpus)
    model.config = model.config.replace(hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1)
    runs = [thread_parallel.forward_backward(model, batch, shards=shards, heads=("mlm", "sbo"),
                                             dropout_rng=dropout_random(0, 7, xp=np))[0].loss for shards in (2, 3)]
    whole = model.forward(batch, train=True, rng=dropout_random(0, 7, xp=np))[0].loss
    no_dropout = model.forward(batch, train=False)[0].loss
    assert rel(runs, [whole, whole]) < 1e-13  # float64: the same masks, the shard means added in another order
    assert rel(whole, no_dropout) > 1e-5  # dropout is on


def test_evaluation_on_threads_equals_evaluation_on_one(micro, corpus, three_threads):
    cfg, model, _ = model_and_batch("spanbert", corpus)
    data = train.prepare_data(cfg, cfg.model_config(), None, log=lambda _message: None)
    rng = np.random.default_rng(1)
    make_batch = train.batch_maker(cfg, cfg.model_config(), data)
    batches = [make_batch(data.train_examples[i:i + 2], rng) for i in range(0, 8, 2)]
    assert train.evaluate(model, batches, threads=3) == train.evaluate(model, batches, threads=1)


def test_a_run_on_two_threads_follows_a_run_on_one(micro, corpus, tmp_path):
    common = dict(preset="micro", data=str(corpus), steps=6, batch_size=4, seq_len=24, dtype="float64",
                  dropout=0.1, eval_every=3, save_every=6, eval_batches=2)
    one = train.run(RunConfig(out=str(tmp_path / "one"), threads=1, **common), log=lambda _m: None)
    two = train.run(RunConfig(out=str(tmp_path / "two"), threads=2, tokenizer=str(tmp_path / "one"), **common),
                    log=lambda _m: None)  # the same vocabulary: the WordPiece trainer is not deterministic
    assert rel(one["train_losses"], two["train_losses"]) < 1e-9
    for key in ("mlm_loss", "sbo_loss"):
        assert rel(one["last_eval"][key], two["last_eval"][key]) < 1e-9
    assert (tmp_path / "two").is_dir()


def test_parallel_for_inside_a_worker_runs_serially_on_that_thread(three_threads):
    seen = []

    def work(item):
        inner = []
        thread_pool.parallel_for(lambda part: inner.append(thread_pool.in_worker_thread()), 10, chunk=2, xp=np)
        seen.append((item, len(inner), all(inner)))
        return item * 2

    assert thread_pool.map_threads(work, range(4)) == [0, 2, 4, 6]
    assert sorted(seen) == [(i, 5, True) for i in range(4)]
    assert not thread_pool.in_worker_thread()


def test_map_dealt_returns_each_items_result_in_order_from_one_pool_call_per_thread(three_threads, monkeypatch):
    """Seven items on three threads: every result in its item's place, from one map_threads call of
    three groups (items 0, 3, 6 | 1, 4 | 2, 5), each group's items run on one thread."""
    calls, seen, map_threads = [], [], thread_pool.map_threads

    def counted_map_threads(fn, items):
        calls.append(list(items))
        return map_threads(fn, calls[-1])

    monkeypatch.setattr(thread_pool, "map_threads", counted_map_threads)
    results = thread_pool.map_dealt(lambda i: seen.append((i, threading.get_ident())) or i * i, range(7))
    assert results == [i * i for i in range(7)]
    assert calls == [[0, 1, 2]] and sorted(i for i, _ in seen) == list(range(7))
    thread_of_group = {i % 3: ident for i, ident in seen}
    assert all(ident == thread_of_group[i % 3] for i, ident in seen)


def test_threads_flag_is_checked(monkeypatch):
    with pytest.raises(ValueError, match="--threads must be at least 1"):
        RunConfig(threads=0).validate()
    with pytest.raises(ValueError, match="--threads applies to --backend numpy"):
        RunConfig(threads=2, backend="cupy").validate()


def test_combined_output_keeps_the_objective_class(micro, corpus, three_threads):
    cfg, model, batch = model_and_batch("electra", corpus)
    out, _ = thread_parallel.forward_backward(model, batch, shards=2, heads=get_objective("electra").HEADS,
                                              weights=get_objective("electra").term_weights(cfg))
    whole, _ = model.forward(batch, train=True)
    assert type(out) is type(whole)
    for field in dataclasses.fields(whole):
        value = getattr(whole, field.name)
        if getattr(value, "ndim", 0) >= 1:  # per-row arrays: the shards' rows, back in order
            assert getattr(out, field.name).shape == value.shape


def test_each_shard_draws_the_masks_one_thread_draws_for_its_rows(micro, corpus, three_threads, monkeypatch):
    cfg, model, batch = model_and_batch("spanbert", corpus)
    p = 0.25
    model.config = model.config.replace(hidden_dropout_prob=p, attention_probs_dropout_prob=p)
    masks, lock, real_dropout = {}, threading.Lock(), encoder_module.dropout_forward

    def dropout_forward(x, rate, rng, *, xp, train):
        out, cache = real_dropout(x, rate, rng, xp=xp, train=train)
        with lock:  # the first dropout of each shard's forward (its embeddings); the shards have 2 and 3 rows
            masks.setdefault(x.shape[0], np.asarray(cache) != 0)
        return out, cache

    monkeypatch.setattr(encoder_module, "dropout_forward", dropout_forward)
    thread_parallel.forward_backward(model, batch, shards=2, heads=("mlm", "sbo"),
                                     dropout_rng=dropout_random(0, 5, xp=np))
    model.forward(batch, train=True, rng=dropout_random(0, 5, xp=np))  # one thread: all 5 rows
    assert masks[5].mean() < 0.9, "dropout is on"
    np.testing.assert_array_equal(np.concatenate([masks[2], masks[3]]), masks[5])


def test_a_nan_in_a_shard_stops_the_run_at_its_step(micro, corpus, tmp_path, monkeypatch):
    from minispanbert.model.spanbert_loss import SpanBertForPretraining
    real_forward, calls = SpanBertForPretraining.forward, []

    def poisoned(self, batch, **kwargs):
        out, cache = real_forward(self, batch, **kwargs)
        if kwargs.get("train"):
            calls.append(None)
            if len(calls) == 5:  # step 3's first or second shard
                out.mlm_loss = out.mlm_loss * np.nan
        return out, cache

    monkeypatch.setattr(SpanBertForPretraining, "forward", poisoned)
    with pytest.raises(ValueError, match="the loss became nan at step 3"):
        train.run(RunConfig(preset="micro", data=str(corpus), out=str(tmp_path / "run"), steps=6, batch_size=4,
                              seq_len=24, threads=2, eval_every=100, save_every=100), log=lambda _m: None)


def task_batch(task_name, rng, rows=ROWS, T=24):
    """A labelled host batch for a fine-tuning task, with padding and ignored labels, so that the
    shards' counted labels differ (QA: a start and an end past the window are ignored apart)."""
    from minispanbert.finetune import wnut17
    from minispanbert.layers.cross_entropy import IGNORE_INDEX

    lengths = np.array([24, 20, 13, 24, 9])[:rows]
    attention_mask = (np.arange(T) < lengths[:, None]).astype(np.int64)
    batch = {"input_ids": np.where(attention_mask == 1, rng.integers(5, MICRO.vocab_size, (rows, T)), 0),
             "token_type_ids": (np.arange(T) >= 10).astype(np.int64) * attention_mask,
             "attention_mask": attention_mask}
    if task_name == "squad":
        batch["start_positions"] = np.array([3, T + 5, 0, 7, 2])[:rows]  # >= T: ignored (the authors' clamp)
        batch["end_positions"] = np.array([5, 9, T, 8, 2])[:rows]
    elif task_name == "sst2":
        batch["labels"] = np.array([1, IGNORE_INDEX, 0, 1, 0])[:rows]
    else:
        labels = rng.integers(0, len(wnut17.TAGS), (rows, T))
        labels[rng.random((rows, T)) < 0.4] = IGNORE_INDEX
        batch["labels"] = np.where(attention_mask == 1, labels, IGNORE_INDEX)
    return batch


@pytest.mark.parametrize("shards", [2, 3])
@pytest.mark.parametrize("task_name", ["squad", "sst2", "wnut17"])
def test_fine_tuning_shards_give_the_whole_batch_loss_and_every_gradient(task_name, shards, three_threads):
    from minispanbert.finetune.recipes import TASKS

    task, config = TASKS[task_name], MICRO.replace(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    params = task.init_params(config, 0, xp=np, dtype="float64")
    batch = task_batch(task_name, np.random.default_rng(2))
    counts = [task.term_counts({k: v[r] for k, v in batch.items()}) for r in thread_parallel.shard_slices(ROWS, shards)]
    assert len({tuple(c.values()) for c in counts}) > 1, "the shards must count different numbers of labels"
    whole, cache = task.forward(params, batch, config, xp=np, train=True)
    whole_grads = task.backward(cache, xp=np)
    loss, grads = thread_parallel.task_forward_backward(task, params, batch, config, xp=np, shards=shards)
    assert rel(loss, whole.loss) < 1e-12
    largest = max(float(np.max(np.abs(g))) for g in whole_grads.values())
    worst = max((float(np.max(np.abs(grads[n] - g))) / max(float(np.max(np.abs(g))), 1e-6 * largest), n)
                for n, g in whole_grads.items())
    assert np.isfinite(worst[0]) and worst[0] < 1e-10, worst
