"""RoBERTa and ALBERT runs (``--objective roberta | albert``) as Hugging Face folders.

Our parameter names already are ``RobertaForMaskedLM``'s and ``AlbertForPreTraining``'s
``state_dict`` names (bert-family-spec.md §3-4), so a folder is the weights, a config.json in the
library's field names and the run's tokenizer. The tied decoder aliases (``lm_head.decoder.*``,
``predictions.decoder.*``) are not stored: ``from_pretrained`` re-ties them to the word table and
the output bias, as for the library's own saves. BERT-architecture runs (spanbert, bert) are
written by :func:`minispanbert.interop.huggingface.save_pretrained`; ELECTRA runs write their two
networks themselves (``RUN/hf``, :mod:`minispanbert.model.electra`).

The tokenizer files make ``AutoTokenizer`` give the ids the run trained on: RoBERTa's byte-level BPE
gets a post-processor adding ``<s> A </s>`` (pairs ``<s> A </s></s> B </s>``, type ids all 0, as
type_vocab_size is 1); ALBERT's cased WordPiece is written as a BERT tokenizer (``[CLS] A [SEP] B
[SEP]``, the SOP layout, with do_lower_case false).
"""
from __future__ import annotations

import json
from pathlib import Path

from tokenizers import Tokenizer, processors

from minispanbert.data.tokenizer import without_padding_or_truncation
from minispanbert.engine.runs.atomic import write_text_atomic
from minispanbert.engine.runs.checkpoint import save_params
from minispanbert.family.bpe_tokenizer import BOS_ID, EOS_ID, PAD_ID, check_bpe_special_ids
from minispanbert.interop.huggingface import CONFIG_FILE, WEIGHTS_FILE, padding_rule_keys
from minispanbert.interop.tokenizer import (
    SPECIAL_TOKENS_MAP_FILE,
    TOKENIZER_CONFIG_FILE,
    TOKENIZER_FILE,
    save_bert_tokenizer,
)

ARCHITECTURES = {"roberta": "RobertaForMaskedLM", "albert": "AlbertForPreTraining"}
# ALBERT keeps the WordPiece ids of the project's tokenizer: [PAD] 0, [CLS] 2, [SEP] 3 (data/tokenizer.py)
SPECIAL_IDS = {"roberta": dict(pad_token_id=PAD_ID, bos_token_id=BOS_ID, eos_token_id=EOS_ID),
               "albert": dict(pad_token_id=0, bos_token_id=2, eos_token_id=3)}
ROBERTA_SPECIALS = dict(bos_token="<s>", eos_token="</s>", unk_token="<unk>", sep_token="</s>", cls_token="<s>",
                       pad_token="<pad>", mask_token="<mask>")


def hf_family_config(config) -> dict:
    """config.json for ``RobertaConfig`` / ``AlbertConfig`` (their field names) from a ModelConfig."""
    if config.model_type not in ARCHITECTURES:
        raise ValueError(f"model_type {config.model_type!r} is not RoBERTa or ALBERT: use interop.huggingface."
                         "save_pretrained for BERT-architecture models")
    hf = {
        "architectures": [ARCHITECTURES[config.model_type]], "model_type": config.model_type,
        "vocab_size": config.vocab_size, "hidden_size": config.hidden_size,
        "num_hidden_layers": config.num_hidden_layers, "num_attention_heads": config.num_attention_heads,
        "intermediate_size": config.intermediate_size, "hidden_act": config.hidden_act,
        "hidden_dropout_prob": config.hidden_dropout_prob,
        "attention_probs_dropout_prob": config.attention_probs_dropout_prob,
        "max_position_embeddings": config.max_position_embeddings, "type_vocab_size": config.type_vocab_size,
        "initializer_range": config.initializer_range, "layer_norm_eps": config.layer_norm_eps,
        "tie_word_embeddings": True, **SPECIAL_IDS[config.model_type],
        **padding_rule_keys(config, SPECIAL_IDS[config.model_type]["pad_token_id"]),
    }
    if config.model_type == "albert":
        hf.update(embedding_size=config.embedding_width, num_hidden_groups=config.num_hidden_groups,
                  inner_group_num=config.inner_group_num, classifier_dropout_prob=config.classifier_dropout_rate)
    return hf


def save_family_pretrained(directory, params, config, *, tokenizer: Tokenizer | None = None) -> str:
    """Write ``directory`` (config.json, model.safetensors and, given the run's tokenizer, its files),
    each file atomically. Returns the architecture."""
    hf = hf_family_config(config)
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise ValueError(f"{directory} is a file: choose a folder to save the model into")
    save_params(directory / WEIGHTS_FILE, params)
    write_text_atomic(directory / CONFIG_FILE, json.dumps(hf, indent=2) + "\n")
    if tokenizer is not None:
        save = save_roberta_tokenizer if config.model_type == "roberta" else save_bert_tokenizer
        save(tokenizer, directory, model_max_length=config.max_sequence_length)
    return hf["architectures"][0]


def save_roberta_tokenizer(tok: Tokenizer, directory, *, model_max_length: int) -> list[str]:
    """Write tokenizer.json (with RoBERTa's ``<s> A </s>`` post-processor), tokenizer_config.json
    and special_tokens_map.json for a run's byte-level BPE (each atomically); returns the file names.
    The tokenizer class is the generic fast one, which uses tokenizer.json as written (add_prefix_space
    false, as the run encoded), and it returns no token_type_ids, as RoBERTa's own tokenizer."""
    check_bpe_special_ids(tok, "the RoBERTa run's tokenizer")
    tok = without_padding_or_truncation(Tokenizer.from_str(tok.to_str()))  # a copy: the caller's keeps its settings
    tok.post_processor = processors.RobertaProcessing(("</s>", EOS_ID), ("<s>", BOS_ID), add_prefix_space=False)
    config = {"tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": model_max_length,
              "model_input_names": ["input_ids", "attention_mask"], **ROBERTA_SPECIALS}
    write_text_atomic(Path(directory) / TOKENIZER_FILE, tok.to_str())
    write_text_atomic(Path(directory) / TOKENIZER_CONFIG_FILE, json.dumps(config, indent=2) + "\n")
    write_text_atomic(Path(directory) / SPECIAL_TOKENS_MAP_FILE, json.dumps(ROBERTA_SPECIALS, indent=2) + "\n")
    return [TOKENIZER_FILE, TOKENIZER_CONFIG_FILE, SPECIAL_TOKENS_MAP_FILE]
