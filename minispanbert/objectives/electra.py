"""``--objective electra``: replaced-token detection (model/electra.py, electra_masking.py) on
single-document blocks with a WordPiece tokenizer, like SpanBERT's.

The preset is the discriminator; the generator is derived from it with ``--generator-size``
(0.25: H_G = H/4, same depth, I_G = 4 H_G, A_G = max(1, H_G // 64)). The embedding width E is the
preset's hidden size (as ELECTRA-Base and -Large; ELECTRA-Small's E = H/2 is not a preset), so the
discriminator has no ``embeddings_project`` and the generator has one (E -> H_G).
L = L_MLM + --disc-weight * L_Disc (lambda = 50). Masking is ELECTRA's own (15% of the tokens,
85% [MASK] / 15% kept), the only --masking value, "token". Adam eps 1e-6 as in the authors'
AdamWeightDecay (spec §5, ELECTRA-Small).

Logged besides the two losses: the generator's MLM accuracy, the discriminator's accuracy over all
non-pad tokens ("disc_acc"), the share of tokens replaced and the discriminator's accuracy on the
replaced and on the original tokens. At the end of a run the two networks are exported as
Hugging Face folders ``RUN/hf/discriminator`` (ElectraForPreTraining) and ``RUN/hf/generator``
(ElectraForMaskedLM), each with the run's tokenizer.json.
"""
from __future__ import annotations

from pathlib import Path

from minispanbert.atomic import write_text_atomic
from minispanbert.data import encode_documents, load_tokenizer, pack_blocks, train_tokenizer  # noqa: F401
from minispanbert.electra_masking import make_electra_batch
from minispanbert.model.electra import ElectraForPretraining, generator_config, save_electra_pretrained
from minispanbert.objectives import check_no_sbo, check_scheme

NAME = "electra"
HEADS = ("mlm", "disc")
SCHEMES = ("token",)
ADAM_BETAS, ADAM_EPS = (0.9, 0.999), 1e-6
RATIOS = {
    "replaced_share": ("replaced_count", "disc_count"),
    "disc_acc_replaced": ("disc_replaced_correct", "replaced_count"),
    "disc_acc_original": ("disc_original_correct", "original_count"),
}
HF_FOLDER = "hf"


def model_config(base, cfg):
    return base.replace(model_type="electra")


def check_flags(cfg) -> None:
    check_scheme(NAME, SCHEMES, cfg)
    check_no_sbo(NAME, cfg)
    if not 0.0 < cfg.generator_size <= 1.0:
        raise ValueError(f"--generator-size must lie in (0, 1], got {cfg.generator_size}: the paper recommends 0.25 to 0.5")
    if cfg.disc_weight <= 0:
        raise ValueError(f"--disc-weight must be positive, got {cfg.disc_weight}: ELECTRA uses 50")


def pack(encoded_documents, *, seq_len, rng):
    blocks, starts = pack_blocks(encoded_documents, seq_len - 2)
    return list(zip(blocks, starts))


def make_batch(examples, rng, *, cfg, model_config, unigram):
    return make_electra_batch([ex[0] for ex in examples], rng, seq_len=cfg.seq_len)


def initialise(model_config, *, seed, xp, dtype, cfg):
    return ElectraForPretraining.initialise(model_config, generator_config(model_config, cfg.generator_size),
                                            seed=seed, xp=xp, dtype=dtype, disc_weight=cfg.disc_weight)


def from_params(model_config, params, *, xp, cfg):
    return ElectraForPretraining(model_config, generator_config(model_config, cfg.generator_size), params, xp=xp,
                                 disc_weight=cfg.disc_weight)


def after_run(run_path, model, tokenizer, cfg, log) -> None:
    """Export both networks as Hugging Face folders under RUN/hf/."""
    folders = save_electra_pretrained(Path(run_path) / HF_FOLDER, model.params, model.config, model.gen_config)
    for folder in folders:
        write_text_atomic(Path(folder) / "tokenizer.json", tokenizer.to_str())
    log(f"exported the discriminator (ElectraForPreTraining) and the generator (ElectraForMaskedLM) to "
        f"{Path(run_path) / HF_FOLDER}")


def term_weights(cfg) -> dict:
    """loss = mlm_loss + disc_weight * disc_loss."""
    return {"mlm": 1.0, "disc": cfg.disc_weight}
