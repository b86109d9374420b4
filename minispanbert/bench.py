"""``python -m minispanbert.bench``: the training-throughput benchmark, against PyTorch with --compare-torch (minispanbert/engine/bench/bench.py)."""
from minispanbert.engine.bench.bench import main

if __name__ == "__main__":
    main()
