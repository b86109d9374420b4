"""Tiny float64 models and hand-built batches shared by the model tests (kept tiny: every element
of every parameter is perturbed twice by the gradient checks)."""
from types import SimpleNamespace

import numpy as np

from minispanbert.config import ModelConfig
from minispanbert.layers.cross_entropy import IGNORE_INDEX

TINY = ModelConfig(vocab_size=13, hidden_size=8, num_hidden_layers=2, num_attention_heads=2,
                   intermediate_size=12, max_position_embeddings=8, hidden_dropout_prob=0.0,
                   attention_probs_dropout_prob=0.0, sbo_max_targets=4, sbo_position_dim=3)


def encoder_inputs(rng, B=2, T=6, config=TINY):
    input_ids = rng.integers(5, config.vocab_size, size=(B, T))
    attention_mask = np.ones((B, T), dtype=np.int64)
    attention_mask[1, 4:] = 0
    input_ids[1, 4:] = 0
    token_type_ids = np.zeros((B, T), dtype=np.int64)
    token_type_ids[0, 3:] = 1
    return input_ids, token_type_ids, attention_mask


def hand_batch(rng, config=TINY):
    """Two sequences of 7: [CLS] a b c d e [SEP] and [CLS] f g h [SEP] pad pad, with one masked span
    in each (positions 2-3 in row 0 with boundaries 1 and 4; position 2 in row 1, boundaries 1, 3)
    and one extra MLM-only target. Token 9 appears twice, so embedding rows get duplicate updates."""
    input_ids = np.array([[2, 9, 4, 4, 9, 7, 3], [2, 6, 4, 8, 3, 0, 0]])
    attention_mask = (np.arange(7) < np.array([[7], [5]])).astype(np.int64)
    mlm_labels = np.full((2, 7), IGNORE_INDEX)
    mlm_labels[0, 2], mlm_labels[0, 3], mlm_labels[1, 2], mlm_labels[0, 5] = 11, 12, 5, 7
    return SimpleNamespace(
        input_ids=input_ids, attention_mask=attention_mask, token_type_ids=np.zeros((2, 7), dtype=np.int64),
        mlm_labels=mlm_labels,
        sbo_batch=np.array([0, 0, 1]), sbo_left=np.array([1, 1, 1]), sbo_right=np.array([4, 4, 3]),
        sbo_rel_pos=np.array([0, 1, 0]), sbo_target=np.array([11, 12, 5]),
    )
