"""Everything that is not needed to understand the model: it wraps the core from outside, and the
core never imports it.

    trainer.py           python -m minispanbert.train: the core's loop with run folders, resume,
                         faults, the BERT family, threads and MPI (through train.Hooks)
    runs/                run folders, atomic writes, checkpoints, metrics.jsonl and plots
    kernels/             CUDA and numba kernels and the in-place AdamW, installed over the core's
                         reference ops for a command's run
    parallel/            CPU threads, the batch split over them, MPI / NCCL ranks
    bench/               python -m minispanbert.bench and the PyTorch twin it is measured against
    check_gradients.py   python -m minispanbert.check_gradients: the table of every gradient check
    datasets.py          python -m minispanbert.data: the public data sets, checked and atomic
    cli.py               the argument parser every command uses (one-line errors, defaults in --help)
"""
