"""Parallelism wrapped around the core from outside: CPU threads (``threads``), the batch split
over them (``shards``), and processes with MPI or GPUs with NCCL (``distributed``)."""
