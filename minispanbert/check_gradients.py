"""``python -m minispanbert.check_gradients``: every backward pass against centred differences, as a table.

The command lives in minispanbert/engine/check_gradients.py; this file lets ``-m`` find it."""
from minispanbert.engine.check_gradients import main

if __name__ == "__main__":
    main()
