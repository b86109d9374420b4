"""Sentence embeddings as sentence-transformers makes them (Reimers & Gurevych 2019, §3; the
all-MiniLM-L6-v2 folder's modules.json: Transformer, then Pooling with mean tokens, then Normalize):
the mean of the encoder's last hidden states over the real tokens, scaled to unit length, so the dot
product of two embeddings is their cosine similarity.

    e = sum_t m_t h_t / max(sum_t m_t, 1e-9)       h (B, T, H), mask m (B, T) -> e (B, H)
    u = e / max(||e||_2, 1e-12)                    (torch.nn.functional.normalize's eps)

Texts longer than the folder's ``max_seq_length`` (sentence_bert_config.json; else the model's
positions) are cut to it, [CLS] and [SEP] included, as sentence-transformers cuts them.
"""
from __future__ import annotations

import json

import numpy as np

from minispanbert.interop.fill_mask import pad_batch
from minispanbert.interop.heads import bert_outputs
from minispanbert.interop.tokenizer import special_token_ids

SENTENCE_CONFIG_FILE = "sentence_bert_config.json"


def mean_pooling(h, attention_mask, *, xp):
    """h (B, T, H), attention_mask (B, T) 1 real / 0 pad -> (B, H) the mean over the real tokens."""
    m = attention_mask[..., None].astype(h.dtype)
    return (h * m).sum(axis=1) / xp.maximum(m.sum(axis=1), 1e-9)


def max_sentence_length(model) -> int:
    """sentence_bert_config.json's max_seq_length when the folder has one, else the model's positions."""
    path = model.source / SENTENCE_CONFIG_FILE
    if path.is_file():
        return int(json.loads(path.read_text(encoding="utf-8"))["max_seq_length"])
    return model.config.max_sequence_length


def sentence_embeddings(model, texts, *, xp, batch_size: int = 32, normalize: bool = True):
    """A loaded Hugging Face folder (`huggingface.load_pretrained`) and N texts -> (N, H) backend
    array of unit-length (``normalize``) mean-pooled embeddings, computed in batches."""
    ids = special_token_ids(model.tokenizer)
    room = max_sentence_length(model) - 2
    rows = [np.array([ids["cls"], *model.tokenizer.encode(text, add_special_tokens=False).ids[:room], ids["sep"]])
            for text in texts]
    parts = []
    for first in range(0, len(rows), batch_size):
        input_ids, token_type_ids, attention_mask = pad_batch(rows[first:first + batch_size], ids["pad"])
        h = bert_outputs(model, input_ids, token_type_ids, attention_mask, xp=xp)["last_hidden_state"]
        parts.append(mean_pooling(h, xp.asarray(attention_mask), xp=xp))
    e = xp.concatenate(parts)
    if normalize:
        e = e / xp.maximum(xp.linalg.norm(e, axis=1, keepdims=True), 1e-12)
    return e
