"""Hugging Face twins of minispanbert's BERT-family models for the parity tests (float64, eval
mode, eager attention, no dropout, built from a config: never from_pretrained). The caller has
already run pytest.importorskip("torch") / ("transformers")."""
import numpy as np

CONFIG_CLASS = {"bert": "BertConfig", "roberta": "RobertaConfig", "albert": "AlbertConfig", "electra": "ElectraConfig"}


def hf_config(config):
    import transformers

    kwargs = dict(vocab_size=config.vocab_size, hidden_size=config.hidden_size,
                  num_hidden_layers=config.num_hidden_layers, num_attention_heads=config.num_attention_heads,
                  intermediate_size=config.intermediate_size, hidden_act=config.hidden_act,
                  hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
                  max_position_embeddings=config.max_position_embeddings, type_vocab_size=config.type_vocab_size,
                  layer_norm_eps=config.layer_norm_eps, pad_token_id=config.pad_token_id,
                  attn_implementation="eager")
    if config.model_type == "roberta":
        kwargs.update(bos_token_id=0, eos_token_id=2)
    if config.model_type == "albert":
        kwargs.update(embedding_size=config.embedding_width, num_hidden_groups=config.num_hidden_groups,
                      inner_group_num=config.inner_group_num, classifier_dropout_prob=0.0)
    if config.model_type == "electra":
        kwargs.update(embedding_size=config.embedding_width)
    return getattr(transformers, CONFIG_CLASS[config.model_type])(**kwargs)


def hf_model(config, class_name, **kwargs):
    """``transformers.<class_name>`` for ``config``, float64, eval mode."""
    import transformers

    return getattr(transformers, class_name)(hf_config(config), **kwargs).double().eval()


def load_ours(model, params, prefix=""):
    """Copy our arrays into the torch model by name (``prefix`` + torch name); returns the names
    torch reported missing (the tied aliases only, checked by the callers)."""
    import torch

    state = {name: torch.from_numpy(np.ascontiguousarray(params[prefix + name])) for name in model.state_dict()
             if prefix + name in params}
    result = model.load_state_dict(state, strict=False)
    assert not result.unexpected_keys
    return set(result.missing_keys)
