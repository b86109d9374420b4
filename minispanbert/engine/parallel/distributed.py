"""Data parallelism by hand: N processes, one replica of the model each, one all-reduce per step.

    global batch of step s   = the batch a single process draws from (seed, s)      (B rows)
    rank r's shard           = rows [r*B/N, (r+1)*B/N)
    rank r computes          g_r = d(L_r)/dtheta on its shard
    all-reduce (sum)         g   = sum_r g_r          identical on every rank afterwards
    every rank               clip(g), AdamW(theta, g) -> the same theta everywhere

**The normalisation trap.** Each pretraining loss is a *mean over the targets of the whole batch*
(MLM: masked tokens; SBO: pair targets), L = (1/N_total) sum_i l_i. A shard's own mean
L_r = (1/n_r) sum_{i in r} l_i uses its local count n_r, and shards hold different numbers of
masked tokens, so sum_r dL_r / N (or the plain sum) is NOT dL. The fix costs one tiny all-reduce:
the per-term counts are summed first (N_total = sum_r n_r), and each rank scales its term's
upstream gradient by n_r / N_total, so that

    sum_r (n_r / N_total) dL_r = (1/N_total) sum_r sum_{i in r} dl_i = dL           exactly.

The scaled losses add up the same way, so the logged loss is the global-batch loss too.

Transports, chosen at start (``--distributed``, or detected from the MPI launcher's environment):

* ``mpi``: `mpi4py` over any MPI (MPICH or Open MPI; ``pip install mpi4py mpich`` gives both on
  a laptop). Gradients are copied into one flat host buffer per dtype (a single ``Allreduce`` per
  step instead of one per tensor: latency is paid once) and summed in place.
* ``nccl``: CuPy arrays all-reduced on the GPUs by NCCL (``cupy.cuda.nccl``), one GPU per rank
  (the launcher's local rank picks the device); the NCCL unique id is made on rank 0 and
  broadcast over MPI, which also carries the small host-side messages (counts, flag checks).

Nothing here is imported by a single-process run, and `mpi4py` is needed only under a launcher.

Faults: an exception on one rank prints ``error: rank R: ...`` there and aborts the whole job
(``MPI_Abort``), so no rank waits forever in a collective; a rank killed outright is noticed by
the launcher, which ends the others at once. Ranks started with different settings are refused
before any work (:meth:`World.check_same`).

Cost model (ring all-reduce): each step every rank sends and receives 2 (N-1)/N x P x 4 bytes for P
float32 parameters; see the README's "Data-parallel pretraining" section.
"""
from __future__ import annotations

import hashlib
import json
import os
import signal
import sys
from dataclasses import dataclass, fields, replace

import numpy as np

from minispanbert.backend import is_cupy

TRANSPORTS = ("none", "mpi", "nccl")
# Set by MPICH/Hydra (PMI_*), Open MPI (OMPI_*) and PMIx launchers (and Slurm's srun with PMI).
LAUNCHER_SIZE_VARS = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "PMIX_SIZE")
LAUNCHER_LOCAL_RANK_VARS = ("MPI_LOCALRANKID", "OMPI_COMM_WORLD_LOCAL_RANK", "PMIX_LOCAL_RANK", "SLURM_LOCALID")


def launcher_world_size() -> int:
    """How many processes the MPI launcher started (1 when not under a launcher)."""
    for var in LAUNCHER_SIZE_VARS:
        value = os.environ.get(var, "")
        if value.isdigit():
            return int(value)
    return 1


def _local_rank() -> int:
    for var in LAUNCHER_LOCAL_RANK_VARS:
        value = os.environ.get(var, "")
        if value.isdigit():
            return int(value)
    return 0


def _import_mpi():
    try:
        from mpi4py import MPI
    except ImportError:
        raise ValueError("data-parallel training needs mpi4py and an MPI: pip install mpi4py mpich, "
                         "then launch with mpiexec -n N python -m minispanbert.train ...") from None
    return MPI


@dataclass
class World:
    """The processes of one run. ``size == 1`` is the plain single-process run (no MPI at all)."""

    rank: int = 0
    size: int = 1
    transport: str = "none"
    comm: object = None          # mpi4py communicator (mpi and nccl transports)
    nccl_comm: object = None     # cupy.cuda.nccl.NcclCommunicator (nccl transport)

    @property
    def is_main(self) -> bool:
        """Rank 0 alone writes logs, metrics, plots and checkpoints."""
        return self.rank == 0

    # ------------------------------------------------------------------ host-side messages

    def sum_host(self, values) -> np.ndarray:
        """Element-wise sum over ranks of a small host float64 vector (counts, evaluation sums)."""
        values = np.array(values, dtype=np.float64)
        if self.size > 1:
            self.comm.Allreduce(self.mpi.IN_PLACE, values, op=self.mpi.SUM)
        return values

    def share_from_main(self, make, *, encode, decode):
        """``make()`` on rank 0 only; every rank gets rank 0's result (sent as ``encode(result)``, a
        str, and rebuilt with ``decode``). E.g. the tokenizer, whose trainer is not guaranteed to
        break ties the same way in two processes."""
        if self.size == 1:
            return make()
        text = self.comm.bcast(encode(make()) if self.is_main else None, root=0)
        return decode(text)

    def check_same(self, settings: dict, what: str) -> None:
        """Refuse to start when the ranks were given different ``settings`` (one line, naming the
        first rank that differs from rank 0)."""
        if self.size == 1:
            return
        digest = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()
        digests = self.comm.allgather(digest)
        differing = [r for r, d in enumerate(digests) if d != digests[0]]
        if differing:
            raise ValueError(f"the ranks were started with different {what} (rank {differing[0]} differs from "
                             "rank 0): give every rank the same flags and data")

    def abort(self, message: str, code: int = 1) -> None:
        """Print ``message`` (one line, prefixed with this rank) and end every rank of the job."""
        print(f"error: rank {self.rank}: {message}", file=sys.stderr, flush=True)
        if self.size > 1:
            self.comm.Abort(code)
        sys.exit(code)

    def interrupt_all(self, message: str) -> None:
        """After a Ctrl-C: print ``message`` (what is on disk) and end every rank, since a rank
        whose Ctrl-C landed inside a collective waits there for this one, which never comes."""
        print(message, file=sys.stderr, flush=True)
        self.comm.Abort(130)

    @property
    def mpi(self):
        return _import_mpi()

    # ------------------------------------------------------------------ gradients

    def allreduce_gradients(self, grads: dict, *, xp) -> None:
        """Sum ``grads`` over ranks, in place, as one flat buffer per dtype (the names in sorted
        order on every rank, so the buffers line up)."""
        if self.size == 1:
            return
        names = sorted(grads)
        for dtype in sorted({grads[n].dtype.str for n in names}):
            group = [n for n in names if grads[n].dtype.str == dtype]
            flat = xp.concatenate([grads[n].reshape(-1) for n in group])
            self._allreduce_flat(flat, xp=xp)
            offset = 0
            for n in group:
                size = grads[n].size
                grads[n][...] = flat[offset:offset + size].reshape(grads[n].shape)
                offset += size

    def _allreduce_flat(self, flat, *, xp) -> None:
        if self.transport == "nccl":
            from cupy.cuda import nccl
            nccl_type = {np.dtype(np.float32): nccl.NCCL_FLOAT32, np.dtype(np.float64): nccl.NCCL_FLOAT64}[flat.dtype]
            stream = xp.cuda.get_current_stream()
            self.nccl_comm.allReduce(flat.data.ptr, flat.data.ptr, flat.size, nccl_type, nccl.NCCL_SUM, stream.ptr)
            return
        if is_cupy(xp):
            raise ValueError("the mpi transport all-reduces host buffers: use --distributed nccl with --backend cupy")
        self.comm.Allreduce(self.mpi.IN_PLACE, flat, op=self.mpi.SUM)

    def same_parameters(self, params: dict, *, xp) -> bool:
        """A cheap drift check: every rank's checksum of the parameters equals rank 0's. Each
        rank applies the same update to the same numbers, so they agree bit for bit; a difference
        means a bug (or a rank given other data)."""
        if self.size == 1:
            return True
        local = float(sum(float(xp.sum(params[n], dtype=xp.float64)) for n in sorted(params)))
        checks = self.comm.allgather(local)
        return all(c == checks[0] for c in checks)


def init_world(transport: str | None, *, backend: str) -> World:
    """The world for this process. ``transport`` None: ``mpi`` (``nccl`` on the CuPy backend) when
    an MPI launcher started more than one process, else a single process; ``"none"`` forces a
    single process."""
    size = launcher_world_size()
    if transport is None:
        transport = "none" if size == 1 else ("nccl" if backend == "cupy" else "mpi")
    if transport not in TRANSPORTS:
        raise ValueError(f"unknown --distributed {transport!r}: choose one of {', '.join(TRANSPORTS)}")
    if transport == "none":
        return World()
    if transport == "nccl" and backend != "cupy":
        raise ValueError("--distributed nccl all-reduces GPU arrays: use it with --backend cupy (or --distributed mpi)")
    if transport == "mpi" and backend == "cupy":
        raise ValueError("--distributed mpi sums host buffers: use --distributed nccl with --backend cupy")
    MPI = _import_mpi()
    comm = MPI.COMM_WORLD
    world = World(rank=comm.Get_rank(), size=comm.Get_size(), transport=transport, comm=comm)
    if world.rank != 0 and world.size > 1:
        # A terminal's Ctrl-C reaches every rank. A rank that left on it would strand the others
        # inside their next collective (at 100% CPU); rank 0 alone reacts, says what is on disk
        # and ends them all (World.interrupt_all).
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    if transport == "nccl":
        import cupy
        from cupy.cuda import nccl
        cupy.cuda.Device(_local_rank() % cupy.cuda.runtime.getDeviceCount()).use()
        unique_id = comm.bcast(nccl.get_unique_id() if world.rank == 0 else None, root=0)
        world.nccl_comm = nccl.NcclCommunicator(world.size, unique_id, world.rank)
    return world


# ---------------------------------------------------------------------- batches


def shard_rows(batch_size: int, world: World) -> slice:
    """The rows of the global batch that ``world.rank`` trains on."""
    if batch_size % world.size:
        raise ValueError(f"--batch-size {batch_size} is not divisible by the {world.size} ranks: "
                         f"use a multiple of {world.size}")
    per_rank = batch_size // world.size
    return slice(world.rank * per_rank, (world.rank + 1) * per_rank)


def slice_batch(batch, rows: slice):
    """The rows ``rows`` of a batch dataclass of host arrays.

    Fields whose name ends in ``_batch`` are row indices of a list of targets (e.g. SBO pairs:
    ``sbo_batch``); their sibling fields with the same prefix (``sbo_left``, ``sbo_target``, ...)
    are filtered to the targets in ``rows`` and the row indices renumbered. Every other array
    field is per row, batch on axis 0, and is sliced."""
    names = [f.name for f in fields(batch)]
    target_prefixes = [n[:-len("batch")] for n in names if n.endswith("_batch")]
    changes = {}
    for prefix in target_prefixes:
        row_of_target = getattr(batch, prefix + "batch")
        keep = (row_of_target >= rows.start) & (row_of_target < rows.stop)
        for n in names:
            if n.startswith(prefix):
                changes[n] = getattr(batch, n)[keep]
        changes[prefix + "batch"] = row_of_target[keep] - rows.start
    for n in names:
        value = getattr(batch, n)
        if n not in changes and isinstance(value, np.ndarray):
            changes[n] = value[rows]
    return replace(batch, **changes)
