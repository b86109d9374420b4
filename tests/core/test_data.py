"""Tests for minispanbert.data: tokenizer, corpus readers, document split and block packing.

Every corpus is written by hand into tmp_path; every expected value is derived by hand or from an
independent rule (e.g. "##"-prefixed pieces for word starts), not read back from the code.
"""
import json

import numpy as np
import pytest

from minispanbert.data import (
    CLS_ID,
    MASK_ID,
    PAD_ID,
    SEP_ID,
    SPECIAL_TOKENS,
    UNK_ID,
    encode_documents,
    encode_lines,
    load_tokenizer,
    pack_blocks,
    pydoc_documents,
    read_corpus,
    read_text,
    read_wikitext,
    save_tokenizer,
    split_documents,
    train_tokenizer,
    unigram_distribution,
    wikitext_sentences,
)

SENTENCES = [
    "The European lobster, Homarus gammarus, lives in the Atlantic.",
    "Is it blue? Yes! It turns red when cooked.",
    "Lobsters are caught in pots around the British Isles, and sold in Paris.",
    "Isn't the lobster (a crustacean) blue?",
    "apple Apple APPLE the <unk> lobster",
]


@pytest.fixture(scope="module")
def tok():
    return train_tokenizer(SENTENCES * 4, vocab_size=200)


def pieces(tok, text):
    return tok.encode(text, add_special_tokens=False).tokens


# --------------------------------------------------------------------------------------- tokenizer


def test_special_token_ids_are_fixed(tok):
    assert (PAD_ID, UNK_ID, CLS_ID, SEP_ID, MASK_ID) == (0, 1, 2, 3, 4)
    assert [tok.token_to_id(t) for t in ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]] == [0, 1, 2, 3, 4]
    assert SPECIAL_TOKENS == ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
    assert 5 < tok.get_vocab_size() <= 200


def test_no_cls_sep_added(tok):
    ids, _ = encode_lines(tok, ["The lobster."])[0]
    assert CLS_ID not in ids and SEP_ID not in ids
    assert len(ids) == len(pieces(tok, "The lobster."))


def test_decode_round_trips_cased_text(tok):
    text = "The European lobster, Homarus gammarus, is blue. Is it red? Yes!"
    ids, _ = encode_lines(tok, [text])[0]
    assert UNK_ID not in ids
    assert any(t.startswith("##") for t in pieces(tok, text))  # the decoder must re-join pieces
    assert tok.decode(ids.tolist()) == text


def test_decode_then_encode_gives_same_ids_with_any_punctuation(tok):
    text = "Isn't the lobster (a crustacean) blue?"
    ids, _ = encode_lines(tok, [text])[0]
    again, _ = encode_lines(tok, [tok.decode(ids.tolist())])[0]
    np.testing.assert_array_equal(again, ids)


def test_tokenizer_is_cased(tok):
    ids = [tok.encode(w, add_special_tokens=False).ids for w in ["apple", "Apple", "APPLE"]]
    assert ids[0] != ids[1] and ids[1] != ids[2]


def test_word_starts_of_a_multi_piece_word(tok):
    # "unbreakable" never occurs in the training text, so WordPiece must spell it in several pieces.
    word_pieces = pieces(tok, "unbreakable")
    assert len(word_pieces) >= 2
    ids, word_starts = encode_lines(tok, ["The unbreakable lobster."])[0]
    # Words: "The" | "unbreakable" (several pieces) | "lobster" (pieces) | "." -> starts from "##".
    toks = [tok.id_to_token(int(i)) for i in ids]
    np.testing.assert_array_equal(word_starts, [not t.startswith("##") for t in toks])
    assert int(word_starts.sum()) == 4
    first = toks.index(word_pieces[0])
    assert word_starts[first] and not word_starts[first + 1 : first + len(word_pieces)].any()
    assert ids.dtype == np.int64 and word_starts.dtype == bool


def test_wikitext_unk_becomes_the_unk_token(tok):
    ids, word_starts = encode_lines(tok, ["the <unk> lobster <unk>"])[0]
    assert [int(i) for i in ids if i == UNK_ID] == [UNK_ID, UNK_ID]
    assert word_starts[list(ids).index(UNK_ID)]
    vocab = tok.get_vocab()
    # "<unk>" occurs 4 times in the training text, read as [UNK]: neither its characters nor merges
    # of "UNK" may have been learned as ordinary pieces.
    assert not {"<", ">", "unk", "##unk", "UNK", "##UNK", "##NK"} & set(vocab)


def test_encode_lines_empty_line_gives_empty_arrays(tok):
    (ids, word_starts), = encode_lines(tok, ["   "])
    assert ids.shape == (0,) and word_starts.shape == (0,)


def test_train_tokenizer_rejects_bad_input():
    with pytest.raises(ValueError, match="vocab_size"):
        train_tokenizer(SENTENCES, vocab_size=5)
    with pytest.raises(ValueError, match="no text"):
        train_tokenizer(["", "  "], vocab_size=100)


def test_save_load_round_trip(tok, tmp_path):
    path = save_tokenizer(tok, tmp_path / "sub" / "tokenizer.json")
    assert [p.name for p in path.parent.iterdir()] == ["tokenizer.json"]  # no temp file left
    loaded = load_tokenizer(path)
    assert loaded.encode(SENTENCES[0]).ids == tok.encode(SENTENCES[0]).ids
    assert loaded.decode(loaded.encode(SENTENCES[1]).ids) == SENTENCES[1]


def test_load_tokenizer_errors(tok, tmp_path):
    with pytest.raises(ValueError, match="not found"):
        load_tokenizer(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="is not a tokenizer.json") as exc:
        load_tokenizer(bad)
    assert "delete" not in str(exc.value)  # --tokenizer corpus.txt was a slip: never advise deleting the file
    # A valid tokenizer.json whose [MASK] and [PAD] ids are swapped is not ours.
    spec = json.loads(tok.to_str())
    vocab = spec["model"]["vocab"]
    vocab["[PAD]"], vocab["[MASK]"] = vocab["[MASK]"], vocab["[PAD]"]
    for added in spec["added_tokens"]:
        added["id"] = vocab[added["content"]]
    foreign = tmp_path / "foreign.json"
    foreign.write_text(json.dumps(spec))
    with pytest.raises(ValueError, match="special token"):
        load_tokenizer(foreign)


def test_unigram_distribution_by_hand():
    p = unigram_distribution([np.array([5, 5, 6, 1, 0]), np.array([7, 5]), np.array([], dtype=np.int64)], 8)
    np.testing.assert_allclose(p, [0, 0, 0, 0, 0, 3 / 5, 1 / 5, 1 / 5])
    with pytest.raises(ValueError, match="outside"):
        unigram_distribution([np.array([5, 8])], 8)
    with pytest.raises(ValueError, match="no ordinary tokens"):
        unigram_distribution([np.array([0, 1, 4])], 8)


def test_encode_documents_keeps_grouping(tok):
    docs = [["The lobster.", "Is it blue?"], ["Yes!"], ["A", "B", "C"]]
    enc = encode_documents(tok, docs)
    assert [len(d) for d in enc] == [2, 1, 3]
    np.testing.assert_array_equal(enc[1][0][0], tok.encode("Yes!", add_special_tokens=False).ids)


# ------------------------------------------------------------------------------------------ corpus

MINI_WIKITEXT = """ 
 = First Article = 
 
 The first paragraph . It has two sentences . 
 
 = = Section A = = 
 
 Numbers : 1 @,@ 000 and 0 @.@ 7 and a role @-@ playing <unk> game ! 
 
 = = = Deeper = = = 
 A heading line above . 
 = Second Article = 
 
 Only one line here ? 
 
"""


def test_read_wikitext_mini_file(tmp_path):
    path = tmp_path / "wiki.train.tokens"
    path.write_text(MINI_WIKITEXT, encoding="utf-8")
    assert read_wikitext(path) == [
        [
            "The first paragraph .",
            "It has two sentences .",
            "Numbers : 1,000 and 0.7 and a role-playing <unk> game !",
            "A heading line above .",
        ],
        ["Only one line here ?"],
    ]
    raw = tmp_path / "wiki.valid.raw"
    raw.write_text(MINI_WIKITEXT, encoding="utf-8")
    assert read_corpus(raw) == read_wikitext(path)


def test_wikitext_text_before_first_title_is_a_document(tmp_path):
    path = tmp_path / "x.raw"
    path.write_text(" Orphan line . \n = T = \n Body . \n", encoding="utf-8")
    assert read_wikitext(path) == [["Orphan line ."], ["Body ."]]


def test_wikitext_sentences_keeps_abbreviations():
    assert wikitext_sentences(" H. americanus is blue . Is it ? Yes ! ") == ["H. americanus is blue .", "Is it ?", "Yes !"]


def test_read_text_file_blank_lines_split_documents(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_bytes(b"  First doc line one.\r\nLine two.\r\n\r\n\r\nSecond doc.\n   \nThird doc.")
    assert read_text(path) == [["First doc line one.", "Line two."], ["Second doc."], ["Third doc."]]
    assert read_corpus(path) == read_text(path)


def test_read_text_directory_sorted_txt_only(tmp_path):
    (tmp_path / "b.txt").write_text("B one.\n\nB two.\n", encoding="utf-8")
    (tmp_path / "a.txt").write_text("A one.\nA one, line 2.", encoding="utf-8")  # no final newline
    (tmp_path / "notes.md").write_text("ignored", encoding="utf-8")
    assert read_corpus(tmp_path) == [["A one.", "A one, line 2."], ["B one."], ["B two."]]


def test_read_text_strips_byte_order_mark(tmp_path):
    path = tmp_path / "bom.txt"
    path.write_bytes("\ufeffHello.\n".encode("utf-8"))
    assert read_text(path) == [["Hello."]]


def test_corpus_errors(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        read_corpus(tmp_path / "nope.txt")
    empty = tmp_path / "empty.txt"
    empty.write_text("\n   \n\n", encoding="utf-8")
    with pytest.raises(ValueError, match="no text"):
        read_corpus(empty)
    headings_only = tmp_path / "h.raw"
    headings_only.write_text(" = Title = \n = = Section = = \n", encoding="utf-8")
    with pytest.raises(ValueError, match="no text"):
        read_corpus(headings_only)
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"hello \xff world")
    with pytest.raises(ValueError, match=r"bad\.txt.*byte offset 6"):
        read_corpus(bad)
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "x.md").write_text("text")
    with pytest.raises(ValueError, match="no .txt files"):
        read_corpus(folder)


def test_pydoc_documents_fallback():
    from pydoc_data.topics import topics

    docs = pydoc_documents()
    assert len(docs) == sum(1 for text in topics.values() if text.strip())
    assert all(doc and all(line and line == line.strip() and "\n" not in line for line in doc) for doc in docs)
    assert not any(set(line) <= set("*=-") for doc in docs for line in doc)
    assert sum(len(line.split()) for doc in docs for line in doc) > 10_000
    assert pydoc_documents() == docs


def test_split_documents_is_deterministic_and_disjoint():
    docs = [[f"doc {i}"] for i in range(20)]
    train, valid = split_documents(docs, 0.25, rng_seed=0)
    assert len(valid) == 5 and len(train) == 15
    assert sorted(train + valid) == sorted(docs)
    assert train == [d for d in docs if d in train] and valid == [d for d in docs if d in valid]  # order kept
    assert split_documents(docs, 0.25, rng_seed=0) == (train, valid)
    assert split_documents(docs, 0.25, rng_seed=1) != (train, valid)
    assert split_documents(docs, 0.0, rng_seed=0) == (docs, [])
    assert len(split_documents(docs[:2], 0.01, rng_seed=0)[1]) == 1  # at least one held out
    assert len(split_documents(docs[:2], 0.9, rng_seed=0)[0]) == 1  # never all of them
    with pytest.raises(ValueError, match="valid_fraction"):
        split_documents(docs, 1.0, rng_seed=0)
    with pytest.raises(ValueError, match="1 document"):
        split_documents(docs[:1], 0.5, rng_seed=0)


# ------------------------------------------------------------------------------------------ blocks


def line(ids, starts=None):
    ids = np.asarray(ids, dtype=np.int64)
    starts = np.ones(len(ids), bool) if starts is None else np.asarray(starts, bool)
    return ids, starts


def test_pack_blocks_greedy_by_hand():
    # Line lengths 3, 4, 2 with max 6: [3] closes when 4 does not fit; then 4 + 2 = 6 fits.
    doc = [line([10, 11, 12]), line([13, 14, 15, 16]), line([17, 18])]
    ids, starts = pack_blocks([doc], 6)
    assert [b.tolist() for b in ids] == [[10, 11, 12], [13, 14, 15, 16, 17, 18]]
    assert all(s.all() for s in starts)


def test_pack_blocks_never_crosses_documents():
    # Each document alone would fit in one block of 10, together they would too: still two blocks.
    ids, _ = pack_blocks([[line([5, 6])], [line([7]), line([8, 9])]], 10)
    assert [b.tolist() for b in ids] == [[5, 6], [7, 8, 9]]


def test_long_line_is_cut_at_word_starts():
    # 10 tokens, words start at 0, 2, 3, 7; max 5 -> cut at 3 (the last start <= 5, not 2), then at
    # 7 (the only start in 4..8), then the rest.
    ids = np.arange(20, 30)
    starts = np.zeros(10, bool)
    starts[[0, 2, 3, 7]] = True
    blocks, block_starts = pack_blocks([[line(ids, starts)]], 5)
    assert [b.tolist() for b in blocks] == [[20, 21, 22], [23, 24, 25, 26], [27, 28, 29]]
    assert [s.tolist() for s in block_starts] == [[1, 0, 1], [1, 0, 0, 0], [1, 0, 0]]


def test_tail_of_a_long_line_shares_a_block_with_the_next_line():
    # 7 tokens, words at 0 and 4, max 5: pieces 4 + 3; the 3-token tail and the next 2-token line fit.
    starts = [1, 0, 0, 0, 1, 0, 0]
    blocks, _ = pack_blocks([[line(range(40, 47), starts), line([50, 51])]], 5)
    assert [b.tolist() for b in blocks] == [[40, 41, 42, 43], [44, 45, 46, 50, 51]]


def test_single_word_longer_than_block_is_cut_mid_word():
    blocks, block_starts = pack_blocks([[line(range(60, 67), [1, 0, 0, 0, 0, 0, 0])]], 3)
    assert [b.tolist() for b in blocks] == [[60, 61, 62], [63, 64, 65], [66]]
    assert all(s[0] for s in block_starts)  # each block's first token counts as a word start


def test_pack_blocks_invariants_on_random_documents():
    rng = np.random.default_rng(0)
    docs, next_id = [], 5
    for _ in range(30):
        doc = []
        for _ in range(int(rng.integers(0, 8))):
            n = int(rng.integers(0, 25))
            starts = rng.random(n) < 0.6
            if n:
                starts[0] = True
            doc.append(line(np.arange(next_id, next_id + n), starts))
            next_id += n
        docs.append(doc)
    max_tokens = 12
    blocks, block_starts = pack_blocks(docs, max_tokens)
    flat = np.concatenate(blocks)
    np.testing.assert_array_equal(flat, np.arange(5, next_id))  # every token once, in order
    doc_of = np.empty(next_id, int)
    for d, doc in enumerate(docs):
        for ids, _ in doc:
            doc_of[ids] = d
    all_starts = np.concatenate([s for doc in docs for _, s in doc]) if next_id > 5 else np.array([], bool)
    for ids, starts in zip(blocks, block_starts):
        assert 1 <= len(ids) <= max_tokens
        assert len(set(doc_of[ids].tolist())) == 1
        np.testing.assert_array_equal(starts[1:], all_starts[ids[1:] - 5])


def test_pack_blocks_rejects_bad_arguments():
    with pytest.raises(ValueError, match="max_tokens"):
        pack_blocks([[line([5])]], 0)
    with pytest.raises(ValueError, match="word_starts"):
        pack_blocks([[(np.array([5, 6]), np.array([True]))]], 4)


def test_pipeline_blocks_decode_back_to_the_documents(tok):
    docs = [[SENTENCES[0], SENTENCES[1]], [SENTENCES[2]]]
    encoded = encode_documents(tok, docs)
    blocks, _ = pack_blocks(encoded, 16)
    assert all(len(b) <= 16 for b in blocks)
    doc0 = np.concatenate([ids for ids, _ in encoded[0]])
    n0 = 0
    for b in blocks:
        if n0 < len(doc0):
            np.testing.assert_array_equal(b, doc0[n0 : n0 + len(b)])
            n0 += len(b)
    assert n0 == len(doc0)
