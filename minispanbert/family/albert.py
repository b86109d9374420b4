"""ALBERT for pretraining: MLM + sentence-order prediction (Lan et al. 2020; bert-family-spec.md §4),
under Hugging Face ``AlbertForPreTraining`` names.

    factorised embedding   tables V x E, E << H, then albert.encoder.embedding_hidden_mapping_in E -> H
                           (parameters V E + E H instead of V H)
    cross-layer sharing    num_hidden_groups G groups of inner_group_num K layers; the L layers reuse
                           them (model/encoder.py: one cache per application, gradients summed), so
                           the parameter count falls by about L/G while the compute stays that of L layers
    activation             gelu_new (tanh form, layers/gelu.py) in the FFN and in the MLM head
    MLM head               predictions.dense (E, H) -> gelu_new -> predictions.LayerNorm (E) -> tied (V, E)
    SOP                    albert.pooler (H, H) + tanh on [CLS], dropout (classifier_dropout_prob),
                           sop_classifier.classifier (2, H); label 1 = the two segments swapped
    loss                   mean MLM CE + mean SOP CE (model/bert_nsp.py)
Post-LN like BERT (some write-ups wrongly call ALBERT pre-LN). Hugging Face has no dropout on the FFN
output (encoder.py follows it); ALBERT v2 trains without dropout at all (its README).

As the trainer's objective, ``--objective albert``: factorised embeddings, one shared layer group, gelu_new, MLM +
sentence-order prediction, n-gram masking (model/albert.py, data/pairs.py, ngram_masking.py).
--masking ngram (default), token or word.
"""
from __future__ import annotations

from minispanbert.data import encode_documents, load_tokenizer, train_tokenizer  # noqa: F401
from minispanbert.family.bert import MaskedLMForPretraining, SentenceHeadNames
from minispanbert.family.ngram_masking import ngram_mask
from minispanbert.family.objectives import check_no_sbo, check_scheme, token_masker
from minispanbert.family.pairs import build_pair_examples, make_pair_batch

ALBERT_SOP = SentenceHeadNames("albert.pooler.", "sop_classifier.classifier.", "sop", dropout=True)
DEFAULT_EMBEDDING_SIZE = 128  # the paper's E for every size (Table 1)


def albert_config(base, *, embedding_size=None, num_hidden_groups=1):
    """A preset turned into ALBERT: E = min(128, H / 4) unless given (tiny: 32), one shared group,
    gelu_new, the SOP classifier's dropout = the hidden dropout."""
    E = embedding_size if embedding_size is not None else min(DEFAULT_EMBEDDING_SIZE, base.hidden_size // 4)
    return base.replace(model_type="albert", hidden_act="gelu_new", embedding_size=E,
                        num_hidden_groups=num_hidden_groups, inner_group_num=1,
                        classifier_dropout_prob=base.hidden_dropout_prob)


class AlbertForPretraining(MaskedLMForPretraining):
    """Hugging Face ``AlbertForPreTraining``: MLM + SOP."""
    sentence = ALBERT_SOP


# --------------------------------------------------------------------------- --objective albert

NAME = "albert"
HEADS = ("mlm", "sop")
SCHEMES = ("ngram", "token", "word")
ADAM_BETAS, ADAM_EPS = (0.9, 0.999), 1e-8
MIN_DOCUMENTS = 2  # a random segment comes from another document


def model_config(base, cfg):
    return albert_config(base)


def check_flags(cfg) -> None:
    check_scheme(NAME, SCHEMES, cfg)
    check_no_sbo(NAME, cfg)


def pack(encoded_documents, *, seq_len, rng):
    return build_pair_examples(encoded_documents, seq_len=seq_len, mode="sop", rng=rng)


def make_batch(examples, rng, *, cfg, model_config, unigram):
    if cfg.masking == "ngram":
        def mask(ids, word_starts, rng):
            return ngram_mask(ids, word_starts, rng, vocab_size=model_config.vocab_size)
    else:
        mask = token_masker(cfg.masking, model_config.vocab_size)
    return make_pair_batch(examples, mask, rng, seq_len=cfg.seq_len)


def initialise(model_config, *, seed, xp, dtype, cfg):
    return AlbertForPretraining.initialise(model_config, seed=seed, xp=xp, dtype=dtype)


def from_params(model_config, params, *, xp, cfg):
    return AlbertForPretraining(model_config, params, xp=xp)
