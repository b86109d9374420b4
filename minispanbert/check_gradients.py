"""``python -m minispanbert.check_gradients``: every backward pass against centred differences, as a table (minispanbert/engine/check_gradients.py)."""
from minispanbert.engine.check_gradients import main

if __name__ == "__main__":
    main()
