"""RoBERTa and ALBERT runs (``--objective roberta | albert``) as Hugging Face folders.

Our parameter names already are ``RobertaForMaskedLM``'s and ``AlbertForPreTraining``'s
``state_dict`` names (bert-family-spec.md §3-4), so a folder is the weights, a config.json in the
library's field names and the run's tokenizer. The tied decoder aliases (``lm_head.decoder.*``,
``predictions.decoder.*``) are not stored: ``from_pretrained`` re-ties them to the word table and
the output bias, as for the library's own saves. BERT-architecture runs (spanbert, bert) are
written by :func:`minispanbert.interop.huggingface.save_pretrained`; ELECTRA runs write their two
networks themselves (``RUN/hf``, :mod:`minispanbert.model.electra`).
"""
from __future__ import annotations

import json
from pathlib import Path

from minispanbert.engine.runs.atomic import write_text_atomic
from minispanbert.engine.runs.checkpoint import save_params
from minispanbert.family.bpe_tokenizer import BOS_ID, EOS_ID, PAD_ID
from minispanbert.interop.huggingface import CONFIG_FILE, WEIGHTS_FILE, padding_rule_keys

ARCHITECTURES = {"roberta": "RobertaForMaskedLM", "albert": "AlbertForPreTraining"}
# ALBERT keeps the WordPiece ids of the project's tokenizer: [PAD] 0, [CLS] 2, [SEP] 3 (data/tokenizer.py)
SPECIAL_IDS = {"roberta": dict(pad_token_id=PAD_ID, bos_token_id=BOS_ID, eos_token_id=EOS_ID),
               "albert": dict(pad_token_id=0, bos_token_id=2, eos_token_id=3)}
TOKENIZER_SPECIALS = {"roberta": dict(bos_token="<s>", eos_token="</s>", unk_token="<unk>", sep_token="</s>",
                                      cls_token="<s>", pad_token="<pad>", mask_token="<mask>"),
                      "albert": dict(unk_token="[UNK]", sep_token="[SEP]", cls_token="[CLS]", pad_token="[PAD]",
                                     mask_token="[MASK]")}


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


def save_family_pretrained(directory, params, config, *, tokenizer_json: str | None = None) -> str:
    """Write ``directory`` (config.json, model.safetensors and, given the run's tokenizer.json text,
    tokenizer.json + tokenizer_config.json), each file atomically. Returns the architecture."""
    hf = hf_family_config(config)
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise ValueError(f"{directory} is a file: choose a folder to save the model into")
    save_params(directory / WEIGHTS_FILE, params)
    write_text_atomic(directory / CONFIG_FILE, json.dumps(hf, indent=2) + "\n")
    if tokenizer_json is not None:
        write_text_atomic(directory / "tokenizer.json", tokenizer_json)
        tokenizer_config = {"tokenizer_class": "PreTrainedTokenizerFast",
                            "model_max_length": config.max_sequence_length,
                            **TOKENIZER_SPECIALS[config.model_type]}
        write_text_atomic(directory / "tokenizer_config.json", json.dumps(tokenizer_config, indent=2) + "\n")
    return hf["architectures"][0]
