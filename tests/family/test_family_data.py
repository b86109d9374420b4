"""The BERT family's batch builders, statistically and by construction: NSP/SOP pairs (label balance
0.50 +- 0.01 where the coin decides, random segments never from A's document, IsNext / in-order
segments contiguous in their document, swapped ones reversed), ALBERT's n-gram masking (length
shares 6/11, 3/11, 2/11 +- 0.01, whole words, the token budget, 80/10/10 per token), RoBERTa's
FULL-SENTENCES blocks (full, crossing documents with one separator, the corpus reproduced) and
byte-level BPE tokenizer."""
import numpy as np
import pytest

from minispanbert.data.tokenizer import CLS_ID, SEP_ID
from minispanbert.family.bpe_tokenizer import (
    BOS_ID,
    EOS_ID,
    MASK_ID,
    PAD_ID,
    UNK_ID,
    encode_bpe_documents,
    train_bpe_tokenizer,
)
from minispanbert.family.full_sentences import pack_full_sentences
from minispanbert.family.ngram_masking import ngram_mask
from minispanbert.family.pairs import build_pair_examples, make_pair_batch, truncate_pair
from minispanbert.layers.cross_entropy import IGNORE_INDEX

V = 1000


def synthetic_documents(rng, n_docs=80, sentences=(20, 40), length=(3, 12), offset=0):
    """Encoded documents of short random sentences; token ids are unique per (document, position)
    modulo V would collide, so each document also gets a disjoint id range for provenance tests."""
    docs = []
    for d in range(n_docs):
        doc = []
        for _ in range(int(rng.integers(*sentences))):
            n = int(rng.integers(*length))
            ids = rng.integers(5, V, size=n)
            starts = rng.random(n) < 0.7
            starts[0] = True
            doc.append((ids, starts))
        docs.append(doc)
    return docs


def doc_stream(doc):
    return np.concatenate([line[0] for line in doc])


def contains(stream, piece):
    """Whether ``piece`` occurs contiguously in ``stream``."""
    n = piece.size
    windows = np.lib.stride_tricks.sliding_window_view(stream, n)
    return bool(np.any(np.all(windows == piece, axis=1)))


def split(example):
    ids, types = example.input_ids, example.token_type_ids
    a = ids[1:np.flatnonzero(types)[0] - 1]
    b = ids[np.flatnonzero(types)[0]:-1]
    return a, b


@pytest.fixture(scope="module")
def corpus():
    return synthetic_documents(np.random.default_rng(0))


@pytest.mark.parametrize("mode", ["nsp", "sop"])
def test_pair_labels_are_balanced_and_segments_come_from_the_right_documents(corpus, mode):
    examples = []
    for seed in range(40):  # several passes (Google's dupe_factor) for > 20k coin-decided pairs
        examples += build_pair_examples(corpus, seq_len=32, mode=mode, rng=np.random.default_rng(seed))
    coin = [ex for ex in examples if not ex.forced]
    assert len(coin) > 20000  # so the share's standard error is < 0.0035: +-0.01 is three of them (0.3% false failures)
    share = np.mean([ex.label for ex in coin])
    assert abs(share - 0.5) < 0.01, share
    forced = [ex for ex in examples if ex.forced]
    assert all(ex.label == 1 and ex.b_doc != ex.a_doc for ex in forced)
    streams = [doc_stream(doc) for doc in corpus]
    checked = 0
    for ex in examples[:6000]:
        a, b = split(ex)
        assert ex.input_ids[0] == CLS_ID and ex.input_ids[-1] == SEP_ID and a.size and b.size
        assert ex.input_ids.size <= 32
        np.testing.assert_array_equal(ex.token_type_ids, np.r_[np.zeros(a.size + 2), np.ones(b.size + 1)])
        if ex.label == 1 and (mode == "nsp" or ex.forced):
            assert ex.b_doc != ex.a_doc          # a random segment is never from A's document
            assert contains(streams[ex.b_doc], b)
        elif ex.input_ids.size < 32:             # not truncated: the two segments are adjacent in order
            first, second = (b, a) if ex.label == 1 else (a, b)   # SOP label 1: swapped
            assert ex.b_doc == ex.a_doc and contains(streams[ex.a_doc], np.r_[first, second])
            checked += 1
    assert checked > 300


def test_one_document_corpus_is_refused_for_pairs(corpus):
    with pytest.raises(ValueError, match="at least two documents"):
        build_pair_examples(corpus[:1], seq_len=48, mode="nsp", rng=np.random.default_rng(0))


def test_truncation_trims_the_longer_segment_from_either_end():
    rng = np.random.default_rng(0)
    fronts = 0
    for _ in range(400):
        a = (np.arange(10, 30), np.ones(20, bool))
        b = (np.arange(100, 105), np.ones(5, bool))
        (ta, _), (tb, _) = truncate_pair(a, b, 20, rng)
        assert ta.size == 15 and tb.size == 5  # only the longer one lost tokens
        assert contains(np.arange(10, 30), ta)
        fronts += ta[0] != 10
    assert 0.35 < fronts / 400 < 1.0  # some cuts came from the front


def test_ngram_lengths_follow_one_over_n_and_masks_are_whole_words():
    """ALBERT's n-gram lengths 1, 2, 3 with probabilities 6/11, 3/11, 2/11 and BERT's 80/10/10, per
    token. Sample: > 15,000 n-grams (a share's standard error <= 0.0041: 0.015 is 3.6 of them, so a
    correct sampler fails with another seed with probability < 0.1%) and ~45,000 masked tokens
    (0.01 is >= 5 standard errors). The seed is fixed, so the test itself is deterministic."""
    rng = np.random.default_rng(1)
    n, record, masked_tokens, kinds, budgets = 200, [], 0, np.zeros(3), []
    for call in range(1600):
        ids = rng.integers(5, V, size=n)
        ids[0], ids[100], ids[-1] = CLS_ID, SEP_ID, SEP_ID
        starts = rng.random(n) < 0.6
        out, labels = ngram_mask(ids, starts, rng, vocab_size=V, record=record)
        hit = labels != IGNORE_INDEX
        assert not hit[[0, 100, n - 1]].any()                   # specials never masked
        assert hit.sum() <= round(0.15 * n)                      # the budget, in tokens
        budgets.append(hit.sum())
        np.testing.assert_array_equal(labels[hit], ids[hit])
        if call < 200:
            word = np.cumsum(starts | (ids < 5) | np.r_[False, (ids < 5)[:-1]])
            for w in np.unique(word[hit]):                      # whole words only
                assert hit[(word == w) & (ids >= 5)].all()
        kinds += [(out[hit] == MASK_ID).sum(), (out[hit] == ids[hit]).sum(),
                  ((out[hit] != MASK_ID) & (out[hit] != ids[hit])).sum()]
        masked_tokens += hit.sum()
    shares = np.bincount(record, minlength=4)[1:] / len(record)
    assert len(record) > 15000, len(record)
    np.testing.assert_allclose(shares, [6 / 11, 3 / 11, 2 / 11], atol=0.015)
    # per token 80% [MASK], 10% kept, 10% random (a random id equal to the original counts as kept: 1/V)
    np.testing.assert_allclose(kinds / masked_tokens, [0.8, 0.1, 0.1], atol=0.01)
    assert np.mean(budgets) > 0.95 * round(0.15 * n)


def test_pair_batch_pads_and_keeps_labels(corpus):
    examples = build_pair_examples(corpus, seq_len=48, mode="nsp", rng=np.random.default_rng(3))[:6]

    def mask(ids, starts, rng):
        return ngram_mask(ids, starts, rng, vocab_size=V)

    batch = make_pair_batch(examples, mask, np.random.default_rng(0), seq_len=48)
    for row, ex in enumerate(examples):
        n = ex.input_ids.size
        assert batch.attention_mask[row].sum() == n and not batch.input_ids[row, n:].any()
        np.testing.assert_array_equal(batch.token_type_ids[row, :n], ex.token_type_ids)
    np.testing.assert_array_equal(batch.sentence_labels, [ex.label for ex in examples])


def test_full_sentence_blocks_are_full_cross_documents_and_separated(corpus):
    docs, max_tokens = corpus[:30], 40
    blocks, starts = pack_full_sentences(docs, max_tokens, EOS_ID)
    assert all(1 <= b.size <= max_tokens for b in blocks) and all(s[0] for s in starts)
    # without the separators the blocks are the corpus, in order
    joined = np.concatenate(blocks)
    np.testing.assert_array_equal(joined[joined != EOS_ID], np.concatenate([doc_stream(d) for d in docs]))
    # walk the sentences: (document, length) in corpus order
    sentences = [(d, line[0].size) for d, doc in enumerate(docs) for line in doc]
    k, crossing = 0, 0
    for b, block in enumerate(blocks):
        body = int((block != EOS_ID).sum())
        first_doc, filled = sentences[k][0], 0
        while filled < body:
            filled += sentences[k][1]
            k += 1
        assert filled == body                                     # whole sentences only
        last_doc = sentences[k - 1][0]
        assert (block == EOS_ID).sum() == last_doc - first_doc    # one separator per document boundary
        assert block[0] != EOS_ID and block[-1] != EOS_ID         # never at a block's edge
        crossing += last_doc > first_doc
        if b + 1 < len(blocks):                                   # full: the next sentence did not fit
            next_doc, next_size = sentences[k]
            assert block.size + next_size + (next_doc != last_doc) > max_tokens
    assert k == len(sentences) and crossing > 5


def test_byte_level_bpe_round_trips_and_has_roberta_ids():
    text = ["The café costs 3.50 € — naïve?", "Second line with <unk> inside.", "ünïcödé and emoji 🙂 too"] * 30
    tok = train_bpe_tokenizer(text, 400)
    assert [tok.token_to_id(t) for t in ("<s>", "<pad>", "</s>", "<unk>", "<mask>")] == \
        [BOS_ID, PAD_ID, EOS_ID, UNK_ID, MASK_ID]
    for line in ("The café costs 3.50 €", "never seen: ЖЖЖ qq"):
        assert tok.decode(tok.encode(line).ids) == line  # byte-level: nothing is unknown
    ids, starts = encode_bpe_documents(tok, [["Second line with <unk> inside."]])[0][0]
    assert UNK_ID in ids and starts[0] and ids.min() >= 3


# ---------------------------------------------------------------------- what each builder promises


def test_roberta_masks_a_block_afresh_every_time_it_is_seen():
    """RoBERTa §4.1, dynamic masking: "we generate the masking pattern every time we feed a sequence
    to the model". The same 8 blocks masked with two generators (two steps) get different masks, and
    with the same generator the same mask (the masks are a function of the step's stream). Two
    independent 15% masks of 8 blocks of 30 tokens coincide with probability below C(30, 5)^-8 ~ 1e-40."""
    from minispanbert.config import preset
    from minispanbert.engine.trainer import RunConfig
    from minispanbert.family import roberta

    rng = np.random.default_rng(0)
    examples = [(rng.integers(5, 300, size=30), np.ones(30, dtype=bool)) for _ in range(8)]
    cfg = RunConfig(objective="roberta", seq_len=32)
    model_config = roberta.model_config(preset("tiny").replace(vocab_size=300), cfg)

    def masks(seed):
        batch = roberta.make_batch(examples, np.random.default_rng(seed), cfg=cfg, model_config=model_config, unigram=None)
        return batch.mlm_labels != IGNORE_INDEX

    assert not np.array_equal(masks([0, 1, 1]), masks([0, 2, 1]))
    np.testing.assert_array_equal(masks([0, 1, 1]), masks([0, 1, 1]))


@pytest.mark.parametrize("n", list(range(6, 60)))
def test_ngram_masking_masks_exactly_albert_s_budget(n):
    """ALBERT's create_masked_lm_predictions: num_to_predict = max(1, int(round(len(tokens) *
    masked_lm_prob))), Python's round (halves to even: 10 tokens -> 2, 30 -> 4), and n-grams that
    would overlap masked tokens are skipped, so exactly that many distinct tokens are masked when
    there are enough one-piece words. Five seeds per length."""
    budget = max(1, round(0.15 * n))
    ids = np.arange(5, 5 + n)
    for seed in range(5):
        _, labels = ngram_mask(ids, np.ones(n, dtype=bool), np.random.default_rng([n, seed]), vocab_size=V)
        assert int((labels != IGNORE_INDEX).sum()) == budget, (n, seed)


def test_bert_decides_80_10_10_for_each_token_not_each_word():
    """Google's create_masked_lm_predictions draws the 80/10/10 replacement per masked token, also
    under whole-word masking (BERT's --do_whole_word_mask masks whole words, then decides per
    piece). Over 2,000 blocks of two-piece words, the two pieces of a masked word get different
    fates (one [MASK], the other not) in 2 * 0.8 * 0.2 = 32% of the words; per word it would be 0%.
    With ~6,000 masked words the share's standard error is 0.6%: 0.32 +- 0.04 is 6 standard errors
    (a correct masker fails with another seed with probability ~2e-9)."""
    from minispanbert.family.objectives import token_masker

    mask = token_masker("word", V)
    rng = np.random.default_rng(3)
    mixed = words = 0
    for _ in range(2000):
        ids = rng.integers(5, V, size=40)
        starts = np.zeros(40, dtype=bool)
        starts[::2] = True  # 20 words of two pieces each
        input_ids, labels = mask(ids, starts, rng)
        for w in range(0, 40, 2):
            if labels[w] != IGNORE_INDEX:
                assert labels[w + 1] != IGNORE_INDEX  # whole words
                words += 1
                mixed += (input_ids[w] == 4) != (input_ids[w + 1] == 4)
    assert 0.28 < mixed / words < 0.36, mixed / words


def test_sentences_left_over_by_a_random_next_segment_are_used_again():
    """Google's create_instances_from_document: after taking a random B, "we didn't actually use these
    segments so we 'put them back' so they don't go to waste" (i -= num_unused_segments). With
    sentences short enough never to be truncated, every sentence of a document then appears in one
    of its own examples (in A, or in an IsNext B). 40 documents: without the put-back about a
    quarter of the chunks would lose sentences, so some would be missing."""
    rng = np.random.default_rng(5)
    docs = []
    next_id = 5
    for _ in range(40):
        doc = []
        for _ in range(int(rng.integers(6, 14))):
            doc.append((np.array([next_id, next_id + 1]), np.array([True, False])))  # a unique two-piece sentence
            next_id += 2
        docs.append(doc)
    examples = build_pair_examples(docs, seq_len=200, mode="nsp", rng=np.random.default_rng(6))
    for d, doc in enumerate(docs):
        seen = set()
        for ex in examples:
            if ex.a_doc != d:
                continue
            a, b = split(ex)
            seen.update(a.tolist())
            if ex.label == 0:
                seen.update(b.tolist())
        assert seen >= {int(s[0][0]) for s in doc}, f"document {d} lost sentences"


def test_truncation_of_equally_long_segments_trims_b():
    """Google's truncate_seq_pair: trunc_tokens = tokens_a if len(tokens_a) > len(tokens_b) else
    tokens_b, so when the two are equally long B loses the token."""
    a = (np.arange(10, 16), np.ones(6, dtype=bool))
    b = (np.arange(20, 26), np.ones(6, dtype=bool))
    for seed in range(10):
        (a_ids, _), (b_ids, _) = truncate_pair(a, b, 11, np.random.default_rng(seed))
        assert a_ids.size == 6 and b_ids.size == 5
