"""Model configuration and the named presets (a minGPT-style table, easy to read and test).

Field names follow Hugging Face ``BertConfig`` where one exists, so a saved ``config.json`` reads
naturally next to a ``transformers`` checkpoint. The SBO fields are SpanBERT's (spec §2).

The BERT family (bert-family-spec.md §1) shares one encoder; these fields select the variant, and
their defaults are BERT/SpanBERT exactly, so older checkpoints (which lack them) load unchanged:

    model_type         "bert" | "roberta" | "albert" | "electra": the parameter-name prefix
                       (``bert.`` ...) and the layout: RoBERTa's position ids pad+1+i, ALBERT's
                       grouped layer names and shared layers, ELECTRA's embeddings_project
    hidden_act         "gelu" (erf) | "gelu_new" (tanh, ALBERT) | "relu" (layers/activation.py)
    embedding_size     None: the embedding tables are H wide. E: the tables and the embedding
                       LayerNorm are E wide and a Linear E -> H follows (ALBERT always has it, as
                       Hugging Face does, even for E = H; ELECTRA only when E != H)
    num_hidden_groups  ALBERT: G groups of ``inner_group_num`` K layers; layer i of L runs every
    inner_group_num    layer of group int(i / (L / G)), so the depth is L*K with G*K weight sets
    pad_token_id       None: no padding_idx rule (BERT/SpanBERT's behaviour here). An id: that
                       word-embedding row starts at 0 and gets no lookup gradient, as
                       torch.nn.Embedding(padding_idx=...) (and RoBERTa's position row of that id)
    classifier_dropout_prob  dropout before a classifier (the sentence and token classifiers,
                       ALBERT's SOP head): BertConfig's ``classifier_dropout``, AlbertConfig's
                       ``classifier_dropout_prob``; None: hidden_dropout_prob, as Hugging Face
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from minispanbert.layers.activation import ACTIVATIONS

MODEL_TYPES = ("bert", "roberta", "albert", "electra")


@dataclass(frozen=True)
class ModelConfig:
    vocab_size: int = 8192
    hidden_size: int = 128
    num_hidden_layers: int = 2
    num_attention_heads: int = 2
    intermediate_size: int = 512
    max_position_embeddings: int = 128
    type_vocab_size: int = 2
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    layer_norm_eps: float = 1e-12
    initializer_range: float = 0.02
    # Span Boundary Objective head (SpanBERT §3.2; the authors' code uses a 15 x 200 table)
    sbo_max_targets: int = 15
    sbo_position_dim: int = 200
    # The BERT family (see the module docstring); the defaults are BERT's.
    model_type: str = "bert"
    hidden_act: str = "gelu"
    embedding_size: int | None = None
    num_hidden_groups: int = 1
    inner_group_num: int = 1
    pad_token_id: int | None = None
    classifier_dropout_prob: float | None = None

    def __post_init__(self):
        for name in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                     "intermediate_size", "max_position_embeddings", "type_vocab_size",
                     "sbo_max_targets", "sbo_position_dim"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"config field {name} must be a positive integer, got {value!r}")
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"hidden_size {self.hidden_size} must be divisible by num_attention_heads "
                f"{self.num_attention_heads}"
            )
        for name in ("hidden_dropout_prob", "attention_probs_dropout_prob", "classifier_dropout_prob"):
            value = getattr(self, name)
            if value is not None and not 0.0 <= value < 1.0:
                raise ValueError(f"config field {name} must be in [0, 1), got {value}")
        if not 0.0 < self.layer_norm_eps < 1.0:  # also refuses NaN: LayerNorm divides by sqrt(var + eps)
            raise ValueError(f"config field layer_norm_eps must be a small positive number (BERT: 1e-12), "
                             f"got {self.layer_norm_eps}")
        if not 0.0 <= self.initializer_range < 1.0:
            raise ValueError(f"config field initializer_range must be in [0, 1) (BERT: 0.02), "
                             f"got {self.initializer_range}")
        if self.model_type not in MODEL_TYPES:
            raise ValueError(f"config field model_type must be one of {', '.join(MODEL_TYPES)}, got {self.model_type!r}")
        if self.hidden_act not in ACTIVATIONS:
            raise ValueError(f"config field hidden_act must be one of {', '.join(ACTIVATIONS)}, got {self.hidden_act!r}")
        if self.embedding_size is not None:
            if not isinstance(self.embedding_size, int) or self.embedding_size < 1:
                raise ValueError(f"config field embedding_size must be None or a positive integer, got {self.embedding_size!r}")
            if self.model_type in ("bert", "roberta") and self.embedding_size != self.hidden_size:
                raise ValueError(f"model_type {self.model_type!r} has no embedding projection: embedding_size must be "
                                 f"None or hidden_size, got {self.embedding_size} (use model_type albert or electra)")
        for name in ("num_hidden_groups", "inner_group_num"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"config field {name} must be a positive integer, got {getattr(self, name)!r}")
        if self.model_type != "albert" and (self.num_hidden_groups, self.inner_group_num) != (1, 1):
            raise ValueError("num_hidden_groups and inner_group_num are ALBERT's layer sharing: "
                             f"use model_type albert or leave them at 1 (model_type is {self.model_type!r})")
        if self.num_hidden_groups > self.num_hidden_layers:
            raise ValueError(f"num_hidden_groups {self.num_hidden_groups} exceeds num_hidden_layers "
                             f"{self.num_hidden_layers}: a group would never run")
        if self.pad_token_id is not None and not (isinstance(self.pad_token_id, int)
                                                  and 0 <= self.pad_token_id < self.vocab_size):
            raise ValueError(f"config field pad_token_id must be None or an id in [0, {self.vocab_size}), "
                             f"got {self.pad_token_id!r}")
        if self.model_type == "roberta":
            if self.pad_token_id is None:
                raise ValueError("model_type roberta needs pad_token_id (its position ids are pad+1+i)")
            if self.max_position_embeddings < self.pad_token_id + 2:
                raise ValueError(f"max_position_embeddings {self.max_position_embeddings} leaves no position "
                                 f"after pad_token_id {self.pad_token_id}: RoBERTa needs max_len + pad + 1 rows")

    @property
    def classifier_dropout_rate(self) -> float:
        """The dropout rate before a classifier: classifier_dropout_prob, else hidden_dropout_prob."""
        return self.hidden_dropout_prob if self.classifier_dropout_prob is None else self.classifier_dropout_prob

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def embedding_width(self) -> int:
        """E: the width of the embedding tables (H unless ``embedding_size`` says otherwise)."""
        return self.embedding_size if self.embedding_size is not None else self.hidden_size

    @property
    def max_sequence_length(self) -> int:
        """The longest input the position table allows: P, or P - pad - 1 for RoBERTa's pad+1+i."""
        if self.model_type == "roberta":
            return self.max_position_embeddings - self.pad_token_id - 1
        return self.max_position_embeddings

    def replace(self, **changes) -> "ModelConfig":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "ModelConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown model config fields {unknown}: the checkpoint was written by another version")
        return cls(**data)


PRESETS: dict[str, ModelConfig] = {
    "tiny": ModelConfig(vocab_size=8192, hidden_size=128, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=512, max_position_embeddings=128),
    "mini": ModelConfig(vocab_size=16384, hidden_size=256, num_hidden_layers=4, num_attention_heads=4,
                        intermediate_size=1024, max_position_embeddings=128),
    "small": ModelConfig(vocab_size=30522, hidden_size=512, num_hidden_layers=4, num_attention_heads=8,
                         intermediate_size=2048, max_position_embeddings=128),
    "base": ModelConfig(vocab_size=28996, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                        intermediate_size=3072, max_position_embeddings=512),
}


def preset(name: str) -> ModelConfig:
    """The named preset, or a ValueError listing the choices."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}: choose one of {', '.join(PRESETS)}")
    return PRESETS[name]
