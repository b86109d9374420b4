"""``python -m minispanbert.bench``: the training-throughput benchmark, against PyTorch with --compare-torch.

The command lives in minispanbert/engine/bench/bench.py; this file lets ``-m`` find it."""
from minispanbert.engine.bench.bench import main

if __name__ == "__main__":
    main()
