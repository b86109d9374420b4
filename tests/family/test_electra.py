"""ELECTRA: the stable binary cross-entropy, the 85/15 masking with host-drawn sampling keys,
Gumbel-max sampling and replaced labels, the discriminator and generator heads, float64 gradient
checks of the whole loss with the samples held fixed, and the shared embeddings' summed gradient."""
import math
import shutil

import numpy as np
import pytest

from minispanbert.data.tokenizer import CLS_ID, MASK_ID, SEP_ID
from minispanbert.engine.check_gradients import (
    MODEL_TOLERANCE,
    OP_TOLERANCE,
    check_electra_discriminator_head,
    check_electra_generator_head,
    check_electra_loss,
    check_electra_shared_embeddings,
    electra_check_setup,
)
from minispanbert.family.electra import (
    DISC_WEIGHT,
    ElectraForPretraining,
    discriminator_head_backward,
    discriminator_head_forward,
    discriminator_view,
    electra_backward,
    electra_forward,
    generator_config,
    generator_head_backward,
    generator_head_forward,
    generator_view,
    gumbel_noise,
    init_electra_params,
    load_electra_pretrained,
    replace_tokens,
    sample_tokens,
    save_electra_pretrained,
)
from minispanbert.family.electra import WORD_EMBEDDINGS as ELECTRA_WORD
from minispanbert.family.electra_masking import make_electra_batch, mask_for_electra, max_predictions
from minispanbert.gradcheck import assert_errors_below, numerical_gradient, rel_error
from minispanbert.layers.binary_cross_entropy import binary_cross_entropy_backward, binary_cross_entropy_forward
from minispanbert.layers.cross_entropy import IGNORE_INDEX

from conftest import assert_allclose_finite
from crash_points import run_with_a_crash

# --------------------------------------------------------------------------- binary cross-entropy


def naive_bce(z, y, m):
    p = 1.0 / (1.0 + np.exp(-z))
    return np.sum(m * -(y * np.log(p) + (1 - y) * np.log(1 - p))) / np.sum(m)


def test_bce_matches_the_textbook_form_and_masks_out_padding(rng):
    z, y = rng.normal(size=(3, 5)) * 3, rng.integers(0, 2, size=(3, 5))
    m = np.ones((3, 5), dtype=np.int64)
    m[2, 3:] = 0
    loss, _ = binary_cross_entropy_forward(z, y, m, xp=np)
    assert float(loss) == pytest.approx(naive_bce(z, y, m), rel=1e-12)
    z2 = z.copy()
    z2[2, 3:] = 1e6  # a padded position can hold anything
    assert float(binary_cross_entropy_forward(z2, y, m, xp=np)[0]) == pytest.approx(float(loss), rel=1e-14)


def test_bce_is_exact_at_logits_of_plus_minus_1000():
    z = np.array([1000.0, -1000.0, 1000.0, -1000.0])
    y = np.array([1, 0, 0, 1])
    m = np.ones(4)
    loss, cache = binary_cross_entropy_forward(z, y, m, xp=np)
    # confident and right: 0; confident and wrong: |z| = 1000
    assert float(loss) == pytest.approx((0 + 0 + 1000 + 1000) / 4, rel=1e-15)
    dz = binary_cross_entropy_backward(1.0, cache, xp=np)
    np.testing.assert_array_equal(dz, np.array([0.0, 0.0, 1.0, -1.0]) / 4)
    assert np.all(np.isfinite(dz))


def test_bce_float32_stays_finite_at_large_logits():
    z = np.array([-1000, -100, 0, 100, 1000], dtype=np.float32)
    y = np.array([1, 0, 1, 1, 0])
    loss, cache = binary_cross_entropy_forward(z, y, np.ones(5, dtype=np.int64), xp=np)
    dz = binary_cross_entropy_backward(1.0, cache, xp=np)
    assert loss.dtype == np.float32 and dz.dtype == np.float32
    assert float(loss) == pytest.approx((1000 + 0 + math.log(2) + 0 + 1000) / 5, rel=1e-6)
    assert np.all(np.isfinite(dz))


def test_bce_gradient_float64_including_large_logits(rng):
    z = np.concatenate([rng.normal(size=10) * 4, [1000.0, -1000.0, 999.0, -999.0]])
    y = np.array([0, 1] * 7)
    m = np.array([1] * 12 + [0, 1])
    _, cache = binary_cross_entropy_forward(z, y, m, xp=np)
    analytic = binary_cross_entropy_backward(0.7, cache, xp=np)
    numeric = numerical_gradient(lambda: 0.7 * binary_cross_entropy_forward(z, y, m, xp=np)[0], z)
    # f ~ 1000 here, so centred differences carry ~1e-16 * 1000 / 1e-5 of rounding: OP_TOLERANCE
    assert rel_error(analytic, numeric) < 1e-7
    assert analytic[12] == 0.0  # masked out


def test_bce_with_an_empty_mask_is_zero_not_nan():
    loss, cache = binary_cross_entropy_forward(np.ones(3), np.ones(3), np.zeros(3), xp=np)
    assert float(loss) == 0.0
    np.testing.assert_array_equal(binary_cross_entropy_backward(1.0, cache, xp=np), np.zeros(3))


# --------------------------------------------------------------------------- masking


def padded_batch(rng, lengths, T, V=50):
    blocks = [rng.integers(5, V, size=n - 2) for n in lengths]
    return blocks


def test_masking_counts_candidates_and_the_85_15_split(rng):
    lengths = [128, 60, 7, 3]
    blocks = padded_batch(rng, lengths, 128)
    counts, masked_tokens, kept = [], 0, 0
    for seed in range(30):
        b = make_electra_batch(blocks, np.random.default_rng(seed), seq_len=128)
        targets = b.mlm_labels != IGNORE_INDEX
        counts.append(targets.sum(axis=1))
        # never [CLS], [SEP] or padding; the labels are the original ids
        assert not np.any(targets & (b.attention_mask == 0))
        assert not np.any(targets & np.isin(b.original_ids, [CLS_ID, SEP_ID]))
        np.testing.assert_array_equal(b.mlm_labels[targets], b.original_ids[targets])
        # x_masked differs from x only at targets, and only by [MASK]: no random tokens
        changed = b.input_ids != b.original_ids
        assert not np.any(changed & ~targets)
        assert np.all(b.input_ids[changed] == MASK_ID)
        masked_tokens += changed.sum()
        kept += (targets & ~changed).sum()
        # one 64-bit key per target (distinct), none elsewhere
        assert b.sample_keys.dtype == np.uint64 and np.all(b.sample_keys[~targets] == 0)
        assert len(set(b.sample_keys[targets].tolist())) == targets.sum()
    # k = max(1, min(N, round(0.15 n), candidates)): N = int(0.155 * 128) = 19
    assert max_predictions(128) == 19
    expected = [min(19, round(0.15 * 128)), round(0.15 * 60), 1, 1]
    np.testing.assert_array_equal(np.array(counts), np.tile(expected, (30, 1)))
    share = masked_tokens / (masked_tokens + kept)
    assert 0.80 < share < 0.90, share
    # the cap counts every position, [CLS] and [SEP] included (the authors' code: int((mask_prob +
    # 0.005) * max_seq_length)): a full row of 26 masks round(0.15 * 26) = 4 = int(0.155 * 26)
    full = make_electra_batch([rng.integers(10, 40, size=24)], np.random.default_rng(0), seq_len=26)
    assert (full.mlm_labels != IGNORE_INDEX).sum() == 4


def test_masking_is_a_function_of_the_generator_only(rng):
    blocks = padded_batch(rng, [20, 15], 24)
    a = make_electra_batch(blocks, np.random.default_rng([3, 7, 1]), seq_len=24)
    b = make_electra_batch(blocks, np.random.default_rng([3, 7, 1]), seq_len=24)
    c = make_electra_batch(blocks, np.random.default_rng([3, 8, 1]), seq_len=24)
    for field in ("input_ids", "mlm_labels", "sample_keys"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
    assert not np.array_equal(a.sample_keys, c.sample_keys)


def test_masking_rejects_bad_input():
    with pytest.raises(ValueError, match="numpy.random.Generator"):
        mask_for_electra(np.ones((1, 4), dtype=np.int64), np.ones((1, 4)), 0)
    with pytest.raises(ValueError, match="seq_len"):
        make_electra_batch([np.arange(5, 20)], np.random.default_rng(0), seq_len=10)


# --------------------------------------------------------------------------- sampling and labels


def test_gumbel_max_takes_the_argmax_of_logits_plus_noise():
    logits = np.array([[0.0, 1.0, 2.0]] * 3, dtype=np.float32)
    noise = np.array([[0.0, 0.0, 0.0], [2.5, 0.0, 0.0], [0.0, 1.5, 0.0]])
    np.testing.assert_array_equal(sample_tokens(logits, noise, xp=np), [2, 0, 1])


def test_gumbel_noise_is_minus_log_of_exponentials_keyed_per_row():
    keys = np.array([7, 2**63 + 5, 7], dtype=np.uint64)
    noise = gumbel_noise(keys, 6)
    for row, key in zip(noise, keys):
        exponentials = np.random.Generator(np.random.Philox(key=int(key))).standard_exponential(6)
        np.testing.assert_array_equal(row, -np.log(exponentials))
    np.testing.assert_array_equal(noise[0], noise[2])  # a row's noise is its key's, wherever it sits
    np.testing.assert_array_equal(gumbel_noise(keys[1:2], 6)[0], noise[1])
    assert gumbel_noise(np.zeros(0, dtype=np.uint64), 6).shape == (0, 6)


def test_sampling_follows_the_softmax_and_never_picks_impossible_ids():
    logits = np.tile(np.array([2.0, 0.0, -1e4, 1.0, -1.0]), (20000, 1)).astype(np.float32)
    samples = sample_tokens(logits, gumbel_noise(np.arange(20000, dtype=np.uint64), 5), xp=np)
    p = np.exp(logits[0].astype(np.float64) - logits[0].max())
    p /= p.sum()
    freq = np.bincount(samples, minlength=5) / samples.size
    assert freq[2] == 0
    assert np.max(np.abs(freq - p)) < 0.015, (freq, p)


def test_logits_that_drift_by_float32_rounding_keep_their_samples():
    """The same run split over threads computes logits that differ by rounding (~1e-7 relative, more
    after some steps). 2000 positions over V = 4096, every logit moved by ~1e-6 relative: no sample
    changes. (Inverse CDF in float64 with one uniform per position moves 4 of them here.)"""
    rng = np.random.default_rng(0)
    logits = (rng.normal(size=(2000, 4096)) * 2).astype(np.float32)
    drifted = (logits * (1 + 1e-6 * rng.normal(size=logits.shape))).astype(np.float32)
    noise = gumbel_noise(np.arange(2000, dtype=np.uint64), 4096)
    np.testing.assert_array_equal(sample_tokens(drifted, noise, xp=np), sample_tokens(logits, noise, xp=np))


def test_replaced_labels_a_sample_equal_to_the_original_is_original():
    original = np.array([[2, 10, 11, 12, 3, 0]])
    positions = np.array([1, 2, 3])
    corrupt, labels = replace_tokens(original, positions, np.array([10, 20, 12]), xp=np)
    np.testing.assert_array_equal(corrupt, [[2, 10, 20, 12, 3, 0]])
    np.testing.assert_array_equal(labels, [[0, 0, 1, 0, 0, 0]])
    np.testing.assert_array_equal(original, [[2, 10, 11, 12, 3, 0]])  # not modified in place


# --------------------------------------------------------------------------- the model


def test_generator_size_follows_the_authors_rule():
    from minispanbert.config import ModelConfig
    small = ModelConfig(vocab_size=30522, hidden_size=256, num_hidden_layers=12, num_attention_heads=4,
                        intermediate_size=1024, max_position_embeddings=512, model_type="electra", embedding_size=128)
    g = generator_config(small)  # ELECTRA-Small: H 256 -> generator H 64, A 1, I 256, L 12, E 128
    assert (g.hidden_size, g.num_attention_heads, g.intermediate_size, g.num_hidden_layers, g.embedding_width) == \
        (64, 1, 256, 12, 128)
    base = small.replace(hidden_size=768, num_attention_heads=12, intermediate_size=3072, embedding_size=768)
    g = generator_config(base, 1 / 3)  # ELECTRA-Base's 1/3: H 256, A 4
    assert (g.hidden_size, g.num_attention_heads, g.intermediate_size) == (256, 4, 1024)
    with pytest.raises(ValueError, match="generator size"):
        generator_config(small, 0.0)


def test_electra_gradient_checks_float64():
    for check, tol in ((check_electra_discriminator_head, OP_TOLERANCE), (check_electra_generator_head, OP_TOLERANCE),
                       (check_electra_loss, MODEL_TOLERANCE), (check_electra_shared_embeddings, MODEL_TOLERANCE),
                       (lambda: check_electra_loss(dropout=True), MODEL_TOLERANCE)):
        assert_errors_below(check(), tol, getattr(check, "__name__", "electra_loss_dropout"))


def separate_networks(params, batch, corrupt, config, gen_config):
    """Each network run ON ITS OWN from its Hugging Face-named view: the generator's L_MLM and the
    discriminator's L_Disc, each with its own encoder_forward/backward (no electra_forward)."""
    from minispanbert.layers.binary_cross_entropy import binary_cross_entropy_backward as bce_b
    from minispanbert.layers.cross_entropy import cross_entropy_backward, cross_entropy_forward
    from minispanbert.model.encoder import encoder_backward, encoder_forward
    gen, disc = generator_view(params), discriminator_view(params)
    positions = np.flatnonzero(batch.mlm_labels.reshape(-1) != IGNORE_INDEX)
    h, enc_cache = encoder_forward(gen, batch.input_ids, batch.token_type_ids, batch.attention_mask, gen_config, xp=np)
    logits, head_cache = generator_head_forward(gen, h, positions, xp=np)
    _, ce_cache = cross_entropy_forward(logits, batch.mlm_labels.reshape(-1)[positions], xp=np)
    dh, gen_grads = generator_head_backward(cross_entropy_backward(1.0, ce_cache, xp=np), head_cache, xp=np)
    decoder = gen_grads.pop(ELECTRA_WORD)
    gen_grads.update(encoder_backward(dh, enc_cache, xp=np))
    gen_grads[ELECTRA_WORD] = gen_grads[ELECTRA_WORD] + decoder
    h, enc_cache = encoder_forward(disc, corrupt, batch.token_type_ids, batch.attention_mask, config, xp=np)
    z, head_cache = discriminator_head_forward(disc, h, xp=np)
    _, bce_cache = binary_cross_entropy_forward(z, (corrupt != batch.original_ids).astype(np.int64),
                                                batch.attention_mask, xp=np)
    dh, disc_grads = discriminator_head_backward(bce_b(1.0, bce_cache, xp=np), head_cache, xp=np)
    disc_grads.update(encoder_backward(dh, enc_cache, xp=np))
    return gen_grads, disc_grads


def test_shared_embedding_gradient_is_the_generator_part_plus_lambda_times_the_discriminator_part():
    params, batch, corrupt, config, gen_config = electra_check_setup()
    _, cache = electra_forward(params, batch, config, gen_config, xp=np, corrupt_ids=corrupt)
    grads = electra_backward(cache, xp=np)
    gen_grads, disc_grads = separate_networks(params, batch, corrupt, config, gen_config)
    shared = [n for n in params if n.startswith("electra.embeddings.")]
    assert len(shared) == 5  # word, position, type tables and the LayerNorm's weight and bias
    for name in shared:
        np.testing.assert_allclose(grads[name], gen_grads[name] + DISC_WEIGHT * disc_grads[name], rtol=1e-12, atol=1e-14)
        assert np.abs(gen_grads[name]).max() > 0 and np.abs(disc_grads[name]).max() > 0  # both really contribute
    for name, value in grads.items():  # everything else belongs to exactly one network
        if name not in shared:
            own = gen_grads[name[len("generator."):]] if name.startswith("generator.") else DISC_WEIGHT * disc_grads[name]
            np.testing.assert_allclose(value, own, rtol=1e-12, atol=1e-14, err_msg=name)
    # embeddings_project is NOT shared: each network has its own, of its own width
    assert params["electra.embeddings_project.weight"].shape == (config.hidden_size, 6)
    assert params["generator.electra.embeddings_project.weight"].shape == (gen_config.hidden_size, 6)


def test_sampling_passes_no_gradient_to_the_generator():
    """The generator's non-embedding tensors get exactly their L_MLM gradient whatever the
    discriminator's weight: L_Disc reaches the generator only through the shared embeddings."""
    params, batch, corrupt, config, gen_config = electra_check_setup()
    grads = {w: electra_backward(electra_forward(params, batch, config, gen_config, xp=np, disc_weight=w)[1], xp=np)
             for w in (0.0, 50.0)}
    for name in params:
        if name.startswith("generator."):
            np.testing.assert_array_equal(grads[0.0][name], grads[50.0][name], err_msg=name)


def test_electra_loss_at_initialisation_is_ln_v_plus_50_ln_2():
    from minispanbert.config import ModelConfig
    config = ModelConfig(vocab_size=200, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                         max_position_embeddings=32, model_type="electra", embedding_size=16,
                         hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    model = ElectraForPretraining.initialise(config, generator_config(config), seed=0, xp=np, dtype="float64")
    rng = np.random.default_rng(0)
    batch = make_electra_batch([rng.integers(5, 200, size=28) for _ in range(8)], rng, seq_len=32)
    out, _ = model.forward(batch)
    assert float(out.mlm_loss) == pytest.approx(math.log(200), abs=0.05)
    assert float(out.disc_loss) == pytest.approx(math.log(2), abs=0.01)
    assert float(out.loss) == pytest.approx(float(out.mlm_loss) + 50 * float(out.disc_loss), rel=1e-12)
    assert out.mlm_count == int((batch.mlm_labels != IGNORE_INDEX).sum())
    assert int(out.disc_count) == int(batch.attention_mask.sum())
    # per-class accuracy counts only real tokens (each row here ends in padding)
    z, y, real = out.disc_logits, out.labels, batch.attention_mask == 1
    assert (~real).any()
    assert int(out.disc_original_correct) == int(((z <= 0) & (y == 0) & real).sum())
    assert int(out.disc_replaced_correct) == int(((z > 0) & (y == 1) & real).sum())
    assert int(out.original_count) == int((real & (y == 0)).sum())
    # nearly every sample from a near-uniform generator differs from the original
    assert int(out.replaced_count) >= out.mlm_count - 2


# --------------------------------------------------------------------------- Hugging Face parity


def test_losses_and_every_gradient_equal_hugging_face_float64():
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from minispanbert.config import ModelConfig
    config = ModelConfig(vocab_size=40, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=24,
                         max_position_embeddings=10, model_type="electra", embedding_size=12,
                         hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    gen_config = generator_config(config, 0.5)
    params = init_electra_params(config, gen_config, 3, xp=np, dtype="float64")
    rng = np.random.default_rng(4)
    params = {k: v + 0.1 * rng.normal(size=v.shape) for k, v in params.items()}  # LN and biases non-trivial
    # rows: full length P (= T), padded, a [PAD] id inside a real row, a token repeated, both segments
    original = np.array([[2, 7, 7, 9, 11, 7, 13, 14, 15, 3],
                         [2, 21, 0, 22, 23, 3, 0, 0, 0, 0],
                         [2, 30, 31, 7, 3, 0, 0, 0, 0, 0]])
    mask = (np.arange(10) < np.array([[10], [6], [5]])).astype(np.int64)
    types = np.zeros_like(original)
    types[0, 5:] = 1
    batch = mask_for_electra(original, mask, np.random.default_rng(9), token_type_ids=types, mask_ratio=0.3)
    out, cache = electra_forward(params, batch, config, gen_config, xp=np)
    grads = electra_backward(cache, xp=np)

    torch.set_num_threads(1)
    common = dict(vocab_size=40, embedding_size=12, num_hidden_layers=2, max_position_embeddings=10, type_vocab_size=2,
                  hidden_act="gelu", hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, layer_norm_eps=1e-12,
                  pad_token_id=None)
    disc_hf = transformers.ElectraForPreTraining(transformers.ElectraConfig(
        hidden_size=16, num_attention_heads=2, intermediate_size=24, **common))
    gen_hf = transformers.ElectraForMaskedLM(transformers.ElectraConfig(
        hidden_size=gen_config.hidden_size, num_attention_heads=gen_config.num_attention_heads,
        intermediate_size=gen_config.intermediate_size, **common))
    for model in (disc_hf, gen_hf):
        model.config._attn_implementation = "eager"
        model.double().eval()
    gen_hf.electra.embeddings = disc_hf.electra.embeddings  # share the whole embeddings module (LN included)
    gen_hf.generator_lm_head.weight = disc_hf.electra.embeddings.word_embeddings.weight
    with torch.no_grad():
        for model, view in ((disc_hf, discriminator_view(params)), (gen_hf, generator_view(params))):
            named = dict(model.named_parameters())
            assert set(named) == set(view), set(named) ^ set(view)
            for name, p in named.items():
                p.copy_(torch.from_numpy(view[name]))

    t = {k: torch.from_numpy(np.asarray(v)) for k, v in dict(
        masked=batch.input_ids, corrupt=out.corrupt_ids, mask=mask, types=types, mlm=batch.mlm_labels,
        labels=out.labels).items()}
    gen_out = gen_hf(input_ids=t["masked"], attention_mask=t["mask"], token_type_ids=t["types"], labels=t["mlm"])
    disc_out = disc_hf(input_ids=t["corrupt"], attention_mask=t["mask"], token_type_ids=t["types"], labels=t["labels"])
    # HF computes its own BCE with labels.float(): float32 even for a double model. Its loss agrees to
    # float32 precision; the float64 comparison recomputes the same formula (BCEWithLogitsLoss over
    # attention_mask == 1) from its float64 logits.
    assert disc_out.loss.dtype == torch.float32
    assert float(out.disc_loss) == pytest.approx(disc_out.loss.item(), rel=1e-6)
    active = t["mask"] == 1
    disc_loss = torch.nn.functional.binary_cross_entropy_with_logits(disc_out.logits[active], t["labels"][active].double())
    total = gen_out.loss + 50.0 * disc_loss
    total.backward()
    assert float(out.mlm_loss) == pytest.approx(gen_out.loss.item(), rel=1e-12)
    assert float(out.disc_loss) == pytest.approx(disc_loss.item(), rel=1e-12)
    assert float(out.loss) == pytest.approx(total.item(), rel=1e-12)
    assert 0 < int(out.replaced_count) and int((batch.mlm_labels != IGNORE_INDEX).sum()) > 0
    hf_grads = {name: p.grad.numpy() for name, p in disc_hf.named_parameters()}
    hf_grads.update({"generator." + name: p.grad.numpy() for name, p in gen_hf.named_parameters()
                     if not name.startswith("electra.embeddings.")})
    assert hf_grads.keys() == grads.keys()
    scale = max(float(np.abs(g).max()) for g in hf_grads.values())
    for name, hf in hf_grads.items():
        if name.endswith("attention.self.key.bias"):  # exactly zero in exact arithmetic: compare the noise
            assert np.abs(grads[name]).max() < 1e-13 * scale and np.abs(hf).max() < 1e-13 * scale, name
        else:
            assert rel_error(grads[name], hf) < 1e-10, (name, rel_error(grads[name], hf))


def test_saved_folders_open_in_hugging_face_with_no_missing_keys(tmp_path):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    params, batch, corrupt, config, gen_config = electra_check_setup()
    folders = save_electra_pretrained(tmp_path / "hf", params, config, gen_config)
    out, _ = electra_forward(params, batch, config, gen_config, xp=np, corrupt_ids=corrupt)
    t = {k: torch.from_numpy(getattr(batch, k)) for k in ("input_ids", "attention_mask", "token_type_ids")}
    for folder, cls in zip(folders, (transformers.ElectraForPreTraining, transformers.ElectraForMaskedLM)):
        model, info = cls.from_pretrained(folder, output_loading_info=True, attn_implementation="eager",
                                          dtype=torch.float64)
        assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"], info
        model.eval()
        with torch.no_grad():
            if cls is transformers.ElectraForMaskedLM:
                hf = model(input_ids=t["input_ids"], attention_mask=t["attention_mask"], token_type_ids=t["token_type_ids"],
                           labels=torch.from_numpy(batch.mlm_labels))
                assert hf.loss.item() == pytest.approx(float(out.mlm_loss), rel=1e-12)
                assert model.generator_lm_head.weight.data_ptr() == model.electra.embeddings.word_embeddings.weight.data_ptr()
            else:
                hf = model(input_ids=torch.from_numpy(corrupt), attention_mask=t["attention_mask"],
                           token_type_ids=t["token_type_ids"])
                assert_allclose_finite(hf.logits.numpy(), out.disc_logits, rtol=1e-10, atol=1e-12)
    assert sorted(p.name for p in (tmp_path / "hf").iterdir()) == ["discriminator", "generator"]


# --------------------------------------------------------------------------- python -m minispanbert.train --objective electra

@pytest.fixture
def corpus(tmp_path):
    from micro_runs import write_corpus

    return write_corpus(tmp_path / "corpus.txt", documents=30, lines=5, words_per_line=(5, 20))


def electra_run(corpus, out, **overrides):
    from minispanbert.engine.trainer import RunConfig, run
    cfg = dict(objective="electra", data=str(corpus), out=str(out), steps=6, batch_size=4, seq_len=32, eval_every=3,
               save_every=3, eval_batches=2, print_every=1000)
    cfg.update(overrides)
    return run(RunConfig(**cfg), log=lambda _msg: None)


def test_train_objective_electra_logs_exports_and_resumes_bit_identically(corpus, tmp_path, monkeypatch):
    import json

    from minispanbert.engine import trainer as train
    from minispanbert.engine.trainer import RunConfig, run
    straight = electra_run(corpus, tmp_path / "straight", dtype="float64")
    records = [json.loads(line) for line in (tmp_path / "straight" / "metrics.jsonl").read_text().splitlines()]
    train_records = [r for r in records if r["split"] == "train"]
    valid = [r for r in records if r["split"] == "valid"]
    assert {"mlm_loss", "disc_loss", "replaced_share", "disc_acc_replaced", "disc_acc_original"} <= set(train_records[0])
    assert {"mlm_acc", "disc_acc", "replaced_share", "disc_acc_replaced", "disc_acc_original"} <= set(valid[0])
    assert train_records[0]["loss"] == pytest.approx(train_records[0]["mlm_loss"] + 50 * train_records[0]["disc_loss"])
    assert 0.1 < valid[0]["replaced_share"] < 0.2  # ~15% of the tokens masked, nearly all samples differ
    assert sorted(p.name for p in (tmp_path / "straight" / "hf").iterdir()) == ["discriminator", "generator"]
    assert json.loads((tmp_path / "straight" / "hf" / "generator" / "config.json").read_text())["hidden_size"] == 32

    # interrupted right after the step-3 checkpoint, then resumed: the samples, hence the losses, replay exactly
    cut = dict(objective="electra", data=str(corpus), out=str(tmp_path / "cut"), steps=6, batch_size=4, seq_len=32,
               eval_every=3, save_every=3, eval_batches=2, dtype="float64")
    real_save = train.save_checkpoint

    def save_then_stop(*args, **kwargs):
        real_save(*args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(train, "save_checkpoint", save_then_stop)
    with pytest.raises(KeyboardInterrupt):
        run(RunConfig(**cut), log=lambda _m: None)
    monkeypatch.setattr(train, "save_checkpoint", real_save)
    resumed = run(RunConfig(**{**cut, "resume": cut["out"]}), log=lambda _m: None)
    assert resumed["train_losses"] == straight["train_losses"][3:]  # exact: bit-identical through sampling
    assert resumed["last_eval"] == straight["last_eval"]


@pytest.mark.parametrize("threads", [None, 1, 3])  # None: the default, as many as the cores
def test_train_objective_electra_overfits_one_batch(corpus, tmp_path, threads):
    """--overfit-batch takes L_Disc from ln 2 to below 0.05 in 100 steps on any thread count (the
    sampled tokens, the discriminator's labels, do not depend on how the batch is split: Gumbel-max
    over keyed noise; with inverse CDF one flipped token held this batch at 0.09 on 2 threads)."""
    result = electra_run(corpus, tmp_path / "of", steps=100, overfit_batch=True, lr=3e-3, eval_every=1000,
                         save_every=1000, threads=threads)
    import json
    records = [json.loads(line) for line in (tmp_path / "of" / "metrics.jsonl").read_text().splitlines()]
    disc = [r["disc_loss"] for r in records if r["split"] == "train"]
    assert disc[0] == pytest.approx(math.log(2), abs=0.05)
    assert min(disc[-10:]) < 0.05, disc[-10:]
    assert result["train_losses"][-1] < result["train_losses"][0] / 5


@pytest.mark.parametrize("overrides, message", [
    (dict(generator_size=0.0), "--generator-size"),
    (dict(disc_weight=-1.0), "--disc-weight"),
    (dict(masking="span"), "--masking span"),
    (dict(objective="spanbert", generator_size=0.5), "applies to --objective electra only"),
])
def test_electra_flags_are_one_line_errors(corpus, tmp_path, overrides, message):
    with pytest.raises(ValueError, match=message):
        electra_run(corpus, tmp_path / "bad", **overrides)


def test_the_discriminator_is_the_encoder_a_fine_tuning_model_takes():
    """finetune's load_encoder_weights takes exactly the discriminator's electra.* tensors (shared
    embeddings included); the generator and the discriminator head are reported unused."""
    from minispanbert.finetune.pretrained_weights import load_encoder_weights
    from minispanbert.model.encoder import init_encoder_params
    params, _, _, config, _ = electra_check_setup()
    task = init_encoder_params(config, np.random.default_rng(5))
    task["classifier.weight"] = np.zeros((2, config.hidden_size))
    loaded, unused = load_encoder_weights(task, params, xp=np)
    assert set(task) - {"classifier.weight"} == {n for n in params if n.startswith("electra.")}
    for name in task:
        if name != "classifier.weight":
            np.testing.assert_array_equal(loaded[name], params[name])
    assert set(unused) == {n for n in params if n.startswith(("generator.", "discriminator_predictions."))}


def test_hugging_face_folders_load_back(tmp_path):
    """Ours round-trip exactly; folders transformers itself saved (two models sharing one embeddings
    module) load into the same loss; a pair that does not share its embeddings is refused."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    params, batch, corrupt, config, gen_config = electra_check_setup()
    save_electra_pretrained(tmp_path / "ours", params, config, gen_config)
    cfg, gcfg, loaded = load_electra_pretrained(tmp_path / "ours", xp=np, dtype="float64")
    assert (cfg.hidden_size, gcfg.hidden_size, cfg.embedding_width, cfg.num_hidden_layers) == (8, 4, 6, 1)
    assert list(loaded) == list(params)
    for name in params:
        np.testing.assert_array_equal(loaded[name], params[name])

    # the same weights, written by transformers' own save_pretrained
    disc = transformers.ElectraForPreTraining.from_pretrained(tmp_path / "ours" / "discriminator", dtype=torch.float64)
    gen = transformers.ElectraForMaskedLM.from_pretrained(tmp_path / "ours" / "generator", dtype=torch.float64)
    gen.electra.embeddings = disc.electra.embeddings
    gen.generator_lm_head.weight = disc.electra.embeddings.word_embeddings.weight
    disc.save_pretrained(tmp_path / "hf" / "discriminator")
    gen.save_pretrained(tmp_path / "hf" / "generator")
    cfg, gcfg, from_hf = load_electra_pretrained(tmp_path / "hf", xp=np, dtype="float64")
    ours = electra_forward(params, batch, config, gen_config, xp=np, corrupt_ids=corrupt)[0]
    theirs = electra_forward(from_hf, batch, cfg, gcfg, xp=np, corrupt_ids=corrupt)[0]
    assert float(theirs.loss) == float(ours.loss)

    # a generator that does not share the discriminator's embeddings is not a pair
    other = dict(params)
    other["electra.embeddings.LayerNorm.bias"] = params["electra.embeddings.LayerNorm.bias"] + 1
    save_electra_pretrained(tmp_path / "mixed", other, config, gen_config)
    save_electra_pretrained(tmp_path / "mixed2", params, config, gen_config)
    import shutil
    shutil.rmtree(tmp_path / "mixed" / "generator")
    shutil.copytree(tmp_path / "mixed2" / "generator", tmp_path / "mixed" / "generator")
    with pytest.raises(ValueError, match="do not share their embeddings"):
        load_electra_pretrained(tmp_path / "mixed", xp=np)
    with pytest.raises(ValueError, match="config.json"):
        load_electra_pretrained(tmp_path / "nowhere", xp=np)


def test_training_step_keeps_the_cupy_discipline(monkeypatch):
    """On the strict device double (tests/strict_backend.py): an ELECTRA training step with dropout
    (sampling included) makes no device -> host copy, its losses and ratios come back in one copy,
    and evaluation runs. The real GPU check is .ci/gpu (not yet run on a GPU)."""
    from cuda_emulator import compiler_missing_reason
    if compiler_missing_reason() is not None:
        pytest.skip(compiler_missing_reason())
    from minispanbert import train as loop
    from minispanbert.engine import kernels
    from minispanbert.engine import trainer as train
    from minispanbert.engine.kernels import cuda as fused
    from minispanbert.family import electra as objective
    from minispanbert.keyed_random import KeyedRandom
    from minispanbert.optim import adamw_init, no_decay_mask

    import strict_backend
    monkeypatch.setattr(fused, "MAX_ROW_BLOCK", 64)
    strict_backend.install_cupyx(monkeypatch)
    xp = strict_backend.xp
    _, batch, _, config, gen_config = electra_check_setup()
    config, gen_config = (c.replace(hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1) for c in (config, gen_config))
    model = ElectraForPretraining.initialise(config, gen_config, seed=0, xp=xp)
    state = adamw_init(model.params, xp=xp)
    cfg = train.RunConfig(objective="electra", dropout=0.1)
    with strict_backend.counting() as copies, kernels.installed():
        out, grad_norm = loop.train_step(model, batch, state, lr=1e-3, cfg=cfg, decay_mask=no_decay_mask(model.params),
                                         dropout_rng=KeyedRandom([0, 0], xp=xp), betas=objective.ADAM_BETAS,
                                         eps=objective.ADAM_EPS)
    assert copies["device_to_host"] == 0, copies
    with strict_backend.counting() as copies:
        record, = train.read_train_records([(1, 1e-3, out, grad_norm)], xp=xp, since=0.0, tokens_per_step=14,
                                           heads=objective.HEADS, ratios=objective.RATIOS)
    assert copies["device_to_host"] == 1
    assert 0 <= record["replaced_share"] <= 4 / 12 and math.isfinite(record["loss"])  # 4 targets, 12 tokens
    metrics = train.evaluate(model, [batch, batch], objective.HEADS, objective.RATIOS)
    assert metrics["disc_targets"] == 24 and metrics["mlm_targets"] == 8


def test_the_runs_export_killed_at_any_change_leaves_the_old_pair_or_the_new_one(tmp_path):
    """RUN/hf (both networks and their tokenizer files) appears complete or not at all: a resumed
    run's export over an earlier one, killed just before each of its changes to the disk in turn,
    leaves a folder that loads as exactly the earlier pair or the new one, never a mix (which
    load_electra_pretrained would refuse: the two networks share their embeddings)."""
    from minispanbert.config import ModelConfig
    from minispanbert.data import train_tokenizer
    from minispanbert.family.electra import HF_FOLDER, after_run
    config = ModelConfig(vocab_size=40, hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=16,
                         max_position_embeddings=16, model_type="electra", embedding_size=4)
    tok = train_tokenizer(["the capital of france is paris"] * 3, vocab_size=40)
    old, new = (ElectraForPretraining.initialise(config, generator_config(config), seed=seed, xp=np, dtype="float32")
                for seed in (0, 1))
    after_run(tmp_path / "earlier", old, tok, None, log=lambda line: None)
    changes = run_with_a_crash(lambda: after_run(tmp_path / "traced", new, tok, None, log=lambda line: None), 0)
    assert len(changes) >= 10  # two folders of weights + config + tokenizer, the staging folder, its move
    for k in range(1, len(changes) + 2):
        run = tmp_path / f"run{k}"
        shutil.copytree(tmp_path / "earlier", run)
        run_with_a_crash(lambda: after_run(run, new, tok, None, log=lambda line: None), crash_at=k)
        _, _, params = load_electra_pretrained(run / HF_FOLDER, xp=np)
        assert any(all(np.array_equal(params[name], model.params[name]) for name in model.params)
                   for model in (old, new)), k
        for network in ("discriminator", "generator"):  # both exports write the same tokenizer files
            for file in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
                written = (run / HF_FOLDER / network / file).read_bytes()
                assert written == (tmp_path / "earlier" / HF_FOLDER / network / file).read_bytes(), (k, network, file)
