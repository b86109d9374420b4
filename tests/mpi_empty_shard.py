"""Run by tests/engine/test_distributed.py as ``mpiexec -n 2 python tests/mpi_empty_shard.py WHAT``:
rank 1's shard has no SBO targets (WHAT = sbo) or no MLM and no SBO targets (WHAT = mlm), rank 0's
has both. Three float32 steps as the trainer takes them (counts summed over the ranks, each term
scaled by local / global count, gradients all-reduced, clipped, AdamW); rank 0 prints, as JSON, each
rank's gradient norms (as hex floats) and a sha256 of its parameters, which must be equal."""
import hashlib
import json
import sys

import numpy as np

from minispanbert import optim
from minispanbert.config import ModelConfig
from minispanbert.engine.parallel.distributed import init_world, shard_rows, slice_batch
from minispanbert.layers.cross_entropy import IGNORE_INDEX
from minispanbert.masking import make_pretraining_batch
from minispanbert.model.spanbert_loss import SpanBertForPretraining

EMPTY = sys.argv[1]
CONFIG = ModelConfig(vocab_size=64, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
                     max_position_embeddings=32, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
HEADS = ("mlm", "sbo")


def emptied(part):
    """The shard with its SBO targets (and, for EMPTY == "mlm", its MLM targets) taken out."""
    none = np.zeros(0, dtype=np.int64)
    fields = dict(vars(part), sbo_batch=none, sbo_left=none, sbo_right=none, sbo_rel_pos=none, sbo_target=none)
    if EMPTY == "mlm":
        fields["mlm_labels"] = np.full_like(part.mlm_labels, IGNORE_INDEX)
    return type(part)(**fields)


def main():
    world = init_world("mpi", backend="numpy")
    rng = np.random.default_rng(0)
    blocks = [rng.integers(5, CONFIG.vocab_size, size=n) for n in (28, 25, 27, 22)]
    batch = make_pretraining_batch(blocks, [np.ones(b.size, dtype=bool) for b in blocks], "span",
                                   np.random.default_rng(1), seq_len=30, vocab_size=CONFIG.vocab_size, mask_ratio=0.3)
    part = slice_batch(batch, shard_rows(4, world))
    if world.rank == 1:
        part = emptied(part)
    model = SpanBertForPretraining.initialise(CONFIG, seed=0, xp=np, dtype="float32")
    state = optim.adamw_init(model.params, xp=np)
    decay_mask = optim.no_decay_mask(model.params)
    norms = []
    for _ in range(3):
        out, cache = model.forward(part)
        counts = [getattr(out, f"{h}_count") for h in HEADS]
        totals = world.sum_host(counts)
        grads = model.backward(cache, term_scales={h: c / t if t else 0.0 for h, c, t in zip(HEADS, counts, totals)})
        world.allreduce_gradients(grads, xp=np)
        norms.append(float(optim.clip_grad_norm(grads, 1.0, xp=np)).hex())
        optim.adamw_update(model.params, grads, state, lr=1e-2, decay_mask=decay_mask, xp=np)
    digest = hashlib.sha256(b"".join(model.params[n].tobytes() for n in sorted(model.params))).hexdigest()
    gathered = world.comm.gather({"norms": norms, "params_sha256": digest,
                                  "sbo_targets": int(part.sbo_target.size)}, root=0)
    if world.is_main:
        print(json.dumps(gathered))


if __name__ == "__main__":
    main()
