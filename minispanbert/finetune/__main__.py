"""``python -m minispanbert.finetune TASK ...``: fine-tune a pretrained encoder (minispanbert/finetune/loop.py)."""
from minispanbert.finetune.loop import main

main()
