"""SQuAD v1.1 data side: reader, features (windows, labels, max context), decoding, official metric, CLI.

Expected values are derived by hand in the comments (token positions, max-context owners, EM/F1),
with a tiny WordPiece vocabulary in which every test word is one token, so positions are predictable.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers

from minispanbert.finetune.evaluate_qa import main as evaluate_main
from minispanbert.finetune.squad import (
    SquadExample,
    answers_with_valid_offsets,
    decode_predictions,
    evaluate,
    exact_match_score,
    f1_score,
    features_to_arrays,
    make_features,
    normalize_answer,
    parse_squad,
    read_predictions,
    read_squad,
    split_by_article,
    write_predictions,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
PASSAGE = " ".join(f"w{i}" for i in range(20))  # 20 one-token words w0..w19
ODD_CONTEXT = "The  price was $3.50 ,  (approx.)\tin\u00a0Paris café — unhappiness!"


def make_tokenizer(extra_words=()):
    """Cased BERT-style WordPiece over a fixed vocabulary; specials first, in the fixed id order."""
    words = [f"w{i}" for i in range(20)] + [f"q{i}" for i in range(12)]
    words += ["The", "price", "was", "$", "3", ".", "50", ",", "(", "approx", ")", "in", "Paris", "café", "—",
              "un", "##happi", "##ness", "!", "?", "1990", "##s", "1990s"]
    vocab = {token: i for i, token in enumerate(SPECIALS + words + list(extra_words))}
    tok = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=False, strip_accents=False)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    return tok


def example(context, answer_text, qid="x", question="q0 q1 q2", title="T", answer_start=None):
    start = context.index(answer_text) if answer_start is None else answer_start
    return SquadExample(qid, title, question, context, ((answer_text, start),))


def squad_dict(articles):
    """articles: list of (title, [(context, [(qid, question, [(text, start), ...])])])."""
    return {"version": "1.1", "data": [
        {"title": title, "paragraphs": [
            {"context": context, "qas": [
                {"id": qid, "question": question, "answers": [{"text": t, "answer_start": s} for t, s in answers]}
                for qid, question, answers in qas]}
            for context, qas in paragraphs]}
        for title, paragraphs in articles]}


def one_hot_logits(features, arrays):
    """Logits with 1 at each feature's labelled start / end position and 0 elsewhere."""
    n, t = arrays["input_ids"].shape
    start = np.zeros((n, t))
    end = np.zeros((n, t))
    start[np.arange(n), arrays["start_positions"]] = 1.0
    end[np.arange(n), arrays["end_positions"]] = 1.0
    return start, end


# ------------------------------------------------------------------------------------------------
# Official metric
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("raw, normalized", [
    ("Denver BRONCOS", "denver broncos"),            # case
    ("Hello, World! (really?)", "hello world really"),  # string.punctuation
    ("“quoted”", "“quoted”"),                        # curly quotes are not in string.punctuation
    ("a dog", "dog"), ("an apple", "apple"), ("The end", "end"),  # each article
    ("another theory about Anthem", "another theory about anthem"),  # articles only as whole words
    ("the-end", "theend"),                           # punctuation goes first, so no article is left
    ("(a)", ""),                                      # ... and here the article becomes whole
    ("  many   spaces\tand\nnewlines ", "many spaces and newlines"),  # whitespace
])
def test_normalize_answer_rules(raw, normalized):
    assert normalize_answer(raw) == normalized


def test_exact_match_and_f1_partial_credit():
    assert exact_match_score("The Denver Broncos!", "denver   broncos")
    assert not exact_match_score("Denver", "Denver Broncos")
    # "the cat sat on the mat" vs "a cat sat on a hat" -> {cat, sat, on, mat} vs {cat, sat, on, hat}:
    # 3 shared, P = R = 3/4, F1 = 3/4.
    assert f1_score("the cat sat on the mat", "a cat sat on a hat") == pytest.approx(0.75)
    # Bags, not sets: "cat cat" vs "cat" shares min(2, 1) = 1 token: P = 1/2, R = 1, F1 = 2/3.
    assert f1_score("cat cat", "cat") == pytest.approx(2 / 3)
    assert f1_score("dog", "cat") == 0.0
    assert f1_score("", "cat") == 0.0
    assert f1_score("The", "the") == 0.0  # both normalise to nothing: no common token (official behaviour)


def test_evaluate_max_over_golds_mean_over_all_questions(capsys):
    context = "Denver Broncos beat the cat sat on a hat near dark red color and blue"
    qas = [
        ("q1", "?", [("Denver Broncos", 0), ("Denver", 0)]),
        ("q2", "?", [("cat sat on a hat", context.index("cat"))]),
        ("q3", "?", [("blue", context.index("blue"))]),
        ("q4", "?", [("blue", context.index("blue")), ("dark red color", context.index("dark"))]),
    ]
    dataset = squad_dict([("A", [(context, qas)])])
    predictions = {"q1": "the denver broncos.", "q2": "the cat sat on the mat", "q4": "red", "other": "x"}
    # q1: EM 1, F1 1 | q2: EM 0, F1 3/4 | q3 missing: 0, 0 | q4: F1 max(0 vs "blue", 2*(1*1/3)/(1+1/3) = 1/2)
    expected = {"exact_match": 100 * 1 / 4, "f1": 100 * (1 + 0.75 + 0 + 0.5) / 4}
    for data in (dataset, dataset["data"], parse_squad(dataset)):
        scores = evaluate(data, predictions)
        assert scores == pytest.approx(expected)
        assert capsys.readouterr().err.strip() == "warning: 1 of 4 questions have no prediction and score 0"


# ------------------------------------------------------------------------------------------------
# Reader
# ------------------------------------------------------------------------------------------------


def write_json(path, obj):
    path.write_text(json.dumps(obj, indent=1), encoding="utf-8")
    return path


GOOD = [("Art_One", [("Alpha beta gamma.", [("id1", "What?", [("beta", 6), ("beta gamma", 6)])])]),
        ("Art_Two", [("Delta epsilon.", [("id2", "Which?", [("Delta", 0)])])])]


def test_read_squad_valid(tmp_path):
    examples = read_squad(write_json(tmp_path / "good.json", squad_dict(GOOD)))
    assert examples == [
        SquadExample("id1", "Art_One", "What?", "Alpha beta gamma.", (("beta", 6), ("beta gamma", 6))),
        SquadExample("id2", "Art_Two", "Which?", "Delta epsilon.", (("Delta", 0),)),
    ]


def test_read_squad_malformed_json_names_file_line_and_column(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('{\n  "version": "1.1",\n  "data": [,]\n}', encoding="utf-8")
    with pytest.raises(ValueError, match=r"broken\.json: malformed JSON at line 3 column 12"):
        read_squad(path)


def test_read_squad_missing_file(tmp_path):
    with pytest.raises(ValueError, match=r"nope\.json: cannot read"):
        read_squad(tmp_path / "nope.json")


@pytest.mark.parametrize("mutate, pattern", [
    (lambda d: d["data"][1]["paragraphs"][0]["qas"][0].pop("question"),
     r"bad\.json: article 1 \('Art_Two'\), paragraph 0, question 'id2': missing field 'question'"),
    (lambda d: d["data"][0]["paragraphs"][0].pop("context"),
     r"bad\.json: article 0 \('Art_One'\), paragraph 0: missing field 'context'"),
    (lambda d: d["data"][1].pop("title"), r"bad\.json: article 1: missing field 'title'"),
    (lambda d: d["data"][0]["paragraphs"][0]["qas"][0]["answers"][0].update(answer_start="6"),
     r"question 'id1', answer 0: field 'answer_start' should be int, got str"),
    (lambda d: d["data"][1]["paragraphs"][0]["qas"][0].update(is_impossible=True, answers=[]),
     r"bad\.json: .*question 'id2': .*SQuAD v2\.0 is not supported"),
    (lambda d: d["data"][1]["paragraphs"][0]["qas"][0].update(id="id1"), r"question 'id1': question id repeated"),
    (lambda d: d["data"][1]["paragraphs"][0]["qas"][0].update(answers=[]), r"question 'id2': no answers"),
])
def test_read_squad_errors_name_file_and_record(tmp_path, mutate, pattern):
    data = squad_dict(GOOD)
    mutate(data)
    with pytest.raises(ValueError, match=pattern):
        read_squad(write_json(tmp_path / "bad.json", data))


def test_split_by_article_never_splits_an_article():
    examples = [SquadExample(f"{a}-{q}", f"title{a}", "?", "c", (("c", 0),)) for a in range(10) for q in range(3)]
    train, heldout = split_by_article(examples, 0.3, seed=0)
    train_titles, heldout_titles = {e.title for e in train}, {e.title for e in heldout}
    assert len(heldout_titles) == 3 and len(train_titles) == 7 and not train_titles & heldout_titles
    assert len(heldout) == 9 and len(train) == 21  # every question of a held-out article goes with it
    assert train == [e for e in examples if e.title in train_titles]  # input order kept
    assert heldout == [e for e in examples if e.title in heldout_titles]
    # Deterministic, and independent of the example order.
    assert split_by_article(examples, 0.3, seed=0) == (train, heldout)
    _, heldout_reversed = split_by_article(examples[::-1], 0.3, seed=0)
    assert {e.title for e in heldout_reversed} == heldout_titles
    assert len({frozenset(e.title for e in split_by_article(examples, 0.3, seed=s)[1]) for s in range(10)}) > 1
    with pytest.raises(ValueError, match="fraction"):
        split_by_article(examples, 1.0, seed=0)
    with pytest.raises(ValueError, match="at least 2 articles"):
        split_by_article(examples[:3], 0.5, seed=0)


# ------------------------------------------------------------------------------------------------
# Features
# ------------------------------------------------------------------------------------------------

# max_seq_len 16, question of 3 tokens: window = 16 - 3 - 3 = 10 passage tokens, stride 4 over 20
# tokens -> windows [0, 10), [4, 14), [8, 18), [12, 20) (the last one has 8 tokens + 2 pads).
WINDOWS = dict(max_seq_len=16, doc_stride=4, max_query_len=3)


def test_answer_crossing_window_edges_gets_cls_label():
    tok = make_tokenizer()
    features = make_features([example(PASSAGE, "w9 w10 w11 w12")], tok, training=True, **WINDOWS)
    assert [(f.doc_start, len(f.token_offsets)) for f in features] == [(0, 10), (4, 10), (8, 10), (12, 8)]
    # Passage token j sits at position 5 + j - doc_start ([CLS] q0 q1 q2 [SEP] = 5 positions first).
    # [0,10) cuts tokens 10..12 off, [12,20) cuts 9..11 off: label [CLS]. The other two contain 9..12.
    assert [(f.start_position, f.end_position) for f in features] == [(0, 0), (10, 13), (6, 9), (0, 0)]
    ids = features_to_arrays(features)["input_ids"]
    for f, row in zip(features, ids):
        if f.start_position:
            assert tok.decode(row[f.start_position:f.end_position + 1].tolist()) == "w9 w10 w11 w12"


def test_input_layout_types_and_masks():
    tok = make_tokenizer()
    features = make_features([example(PASSAGE, "w1")], tok, training=True, **WINDOWS)
    arrays = features_to_arrays(features)
    assert {k: (v.shape, v.dtype) for k, v in arrays.items()} == {
        "input_ids": ((4, 16), np.int32), "token_type_ids": ((4, 16), np.int32),
        "attention_mask": ((4, 16), np.int32), "start_positions": ((4,), np.int32), "end_positions": ((4,), np.int32)}
    v = tok.token_to_id
    last = features[3]  # passage tokens w12..w19, then [SEP] and 2 pads
    expected_ids = [2, v("q0"), v("q1"), v("q2"), 3] + [v(f"w{i}") for i in range(12, 20)] + [3, 0, 0]
    assert arrays["input_ids"][3].tolist() == expected_ids
    assert arrays["token_type_ids"][3].tolist() == [0] * 5 + [1] * 9 + [0] * 2
    assert arrays["attention_mask"][3].tolist() == [1] * 14 + [0] * 2
    assert arrays["attention_mask"][0].tolist() == [1] * 16  # a full window has no padding
    assert last.passage_start == 5
    assert [PASSAGE[s:e] for s, e in last.token_offsets] == [f"w{i}" for i in range(12, 20)]


def test_long_question_truncated_to_max_query_len():
    tok = make_tokenizer()
    long_q = " ".join(f"q{i}" for i in range(10))
    short = make_features([example(PASSAGE, "w1", question="q7")], tok, training=True, **WINDOWS)
    features = make_features([example(PASSAGE, "w1", question=long_q)], tok, training=True, **WINDOWS)
    v = tok.token_to_id
    assert features[0].input_ids[:5].tolist() == [2, v("q0"), v("q1"), v("q2"), 3]
    assert features[0].passage_start == 5 and len(features[0].token_offsets) == 10
    # A 1-token question leaves 16 - 1 - 3 = 12 passage tokens per window: [0,12), [4,16), [8,20).
    assert short[0].input_ids[:3].tolist() == [2, v("q7"), 3]
    assert [(f.doc_start, len(f.token_offsets)) for f in short] == [(0, 12), (4, 12), (8, 12)]


def test_max_context_hand_computed():
    # score(token, window) = min(left, right) + 0.01 * len. E.g. w8: [0,10) pos 8 -> min(8,1) = 1.1,
    # [4,14) pos 4 -> 4.1, [8,18) pos 0 -> 0.1: owned by window 1. Worked out for all: tokens 0-6 ->
    # window 0, 7-10 -> window 1, 11-14 -> window 2, 15-19 -> window 3.
    features = make_features([example(PASSAGE, "w1")], make_tokenizer(), training=False, **WINDOWS)
    F, T = False, True
    assert [f.token_is_max_context.tolist() for f in features] == [
        [T] * 7 + [F] * 3, [F] * 3 + [T] * 4 + [F] * 3, [F] * 3 + [T] * 4 + [F] * 3, [F] * 3 + [T] * 5]


def test_max_context_ties_go_to_the_earlier_window():
    # Stride 5, windows [0,10), [5,15), [10,20). w7: [0,10) pos 7 -> min(7,2) + 0.1 = 2.1 and [5,15)
    # pos 2 -> min(2,7) + 0.1 = 2.1, a tie -> window 0; likewise w12 -> window 1. Owners: 0-7 -> 0,
    # 8-12 -> 1, 13-19 -> 2.
    features = make_features([example(PASSAGE, "w1")], make_tokenizer(), max_seq_len=16, doc_stride=5,
                             max_query_len=3, training=False)
    F, T = False, True
    assert [f.token_is_max_context.tolist() for f in features] == [
        [T] * 8 + [F] * 2, [F] * 3 + [T] * 5 + [F] * 2, [F] * 3 + [T] * 7]


@pytest.mark.parametrize("max_seq_len, doc_stride, max_query_len", [(9, 1, 2), (12, 3, 3), (16, 4, 3), (20, 7, 5)])
def test_every_passage_token_is_max_context_in_exactly_one_window(max_seq_len, doc_stride, max_query_len):
    tok = make_tokenizer()
    context = " ".join(f"w{i % 20}" for i in range(37))
    features = make_features([example(context, "w3")], tok, max_seq_len=max_seq_len, doc_stride=doc_stride,
                             max_query_len=max_query_len, training=False)
    owners = np.zeros(37, dtype=int)
    covered = np.zeros(37, dtype=int)
    for f in features:
        covered[f.doc_start:f.doc_start + len(f.token_offsets)] += 1
        owners[f.doc_start:f.doc_start + len(f.token_offsets)] += f.token_is_max_context
    assert covered.min() >= 1 and owners.tolist() == [1] * 37


def test_training_false_has_no_labels_and_validation_errors():
    tok = make_tokenizer()
    features = make_features([example(PASSAGE, "w1")], tok, training=False, **WINDOWS)
    assert all(f.start_position is None for f in features)
    assert set(features_to_arrays(features)) == {"input_ids", "token_type_ids", "attention_mask"}
    ex = [example(PASSAGE, "w1")]
    with pytest.raises(ValueError, match="max_seq_len=6 leaves no room.*at least 7"):
        make_features(ex, tok, max_seq_len=6, doc_stride=1, max_query_len=3, training=True)
    with pytest.raises(ValueError, match="doc_stride=11 is larger than the smallest passage window \\(10"):
        make_features(ex, tok, max_seq_len=16, doc_stride=11, max_query_len=3, training=True)
    # A Hugging Face vocabulary's special ids (here [PAD]=1, [CLS]=7, [SEP]=5) are read from the tokenizer...
    shifted_vocab = {"[UNK]": 0, "[PAD]": 1, "[MASK]": 4, "[SEP]": 5, "[CLS]": 7}
    shifted = Tokenizer(models.WordPiece(shifted_vocab, unk_token="[UNK]"))
    row = make_features(ex, shifted, training=True, **WINDOWS)[0].input_ids
    assert row[0] == 7 and list(row).count(5) == 2 and row[-1] == 1
    # ...and a tokenizer without one of them is refused.
    no_cls = Tokenizer(models.WordPiece({"[UNK]": 0, "[PAD]": 1, "[SEP]": 3}, unk_token="[UNK]"))
    with pytest.raises(ValueError, match=r"lacks \[CLS\], \[SEP\] or \[PAD\]"):
        make_features(ex, no_cls, training=True, **WINDOWS)


def test_tokenizer_truncation_setting_does_not_cut_the_passage():
    tok = make_tokenizer()
    tok.enable_truncation(max_length=4)
    features = make_features([example(PASSAGE, "w18")], tok, training=True, **WINDOWS)
    assert len(features) == 4 and features[3].start_position == 5 + 18 - 12
    assert tok.truncation is not None  # the caller's tokenizer is left as it was


# ------------------------------------------------------------------------------------------------
# Decoding
# ------------------------------------------------------------------------------------------------


def test_decode_recovers_exact_original_text_from_one_hot_logits():
    examples = [
        example(ODD_CONTEXT, "$3.50 ,  (approx.)", qid="spacing"),
        example(ODD_CONTEXT, "Paris café — unhappiness", qid="unicode"),
        example(ODD_CONTEXT, "unhappiness", qid="subword"),
        example(PASSAGE, "w9 w10 w11 w12", qid="windows"),
        example(PASSAGE, "w19", qid="last"),
        example("Back in the 1990s .", "1990", qid="inside-token"),
    ]
    # Windows of 20 - 3 - 3 = 14 tokens, stride 4: both 20-token contexts get [0,14), [4,18), [8,20),
    # so most answers lie in several windows and the decoder must pick one copy.
    features = make_features(examples, make_tokenizer(), max_seq_len=20, doc_stride=4, max_query_len=3, training=True)
    assert len(features) == 3 + 3 + 3 + 3 + 3 + 1
    start, end = one_hot_logits(features, features_to_arrays(features))
    predictions = decode_predictions(examples, features, start, end)
    # An answer inside a token ("1990" of the vocabulary word "1990s") can only come back as the whole token.
    assert predictions == {"spacing": "$3.50 ,  (approx.)", "unicode": "Paris café — unhappiness",
                           "subword": "unhappiness", "windows": "w9 w10 w11 w12", "last": "w19",
                           "inside-token": "1990s"}


def passage_logits(features, values_by_window):
    """(N, T) logits, 0 except values_by_window[w] = {passage token index: value} in window w."""
    logits = np.zeros((len(features), len(features[0].input_ids)))
    for w, values in values_by_window.items():
        f = features[w]
        for token, value in values.items():
            logits[w, f.passage_start + token - f.doc_start] = value
    return logits


def test_decode_respects_max_answer_len_end_after_start_and_n_best():
    examples = [example(PASSAGE, "w1")]
    features = make_features(examples, make_tokenizer(), training=False, max_seq_len=30, doc_stride=4,
                             max_query_len=3)
    assert len(features) == 1  # one window of all 20 tokens
    start = passage_logits(features, {0: {2: 10.0, 5: 5.0}})
    end = passage_logits(features, {0: {9: 10.0, 6: 4.0}})
    # (2,9): 20, length 8. With at most 5 tokens: (5,9): 15 beats (2,6): 14, (5,6): 9.
    assert decode_predictions(examples, features, start, end, max_answer_len=8) == {"x": "w2 w3 w4 w5 w6 w7 w8 w9"}
    assert decode_predictions(examples, features, start, end, max_answer_len=5) == {"x": "w5 w6 w7 w8 w9"}
    # Best start after best end: the reversed pair (8,3) = 20 is invalid; (8,9) = 12 beats (2,3) = 11.
    start = passage_logits(features, {0: {8: 10.0, 2: 1.0}})
    end = passage_logits(features, {0: {3: 10.0, 9: 2.0}})
    assert decode_predictions(examples, features, start, end) == {"x": "w8 w9"}
    # With n_best=1 only the pair (8, 3) is considered, which is invalid: empty answer.
    assert decode_predictions(examples, features, start, end, n_best=1) == {"x": ""}


def test_decode_starts_only_at_max_context_tokens():
    examples = [example(PASSAGE, "w1")]
    features = make_features(examples, make_tokenizer(), training=False, **WINDOWS)
    # w8 is owned by window 1 (see test_max_context_hand_computed). Window 0 scores (8,9) at 200 but
    # may not start at w8, so its best (start <= 6, length <= 2) scores 0; window 1's (7,7) scores 2.
    start = passage_logits(features, {0: {8: 100.0}, 1: {7: 1.0}})
    end = passage_logits(features, {0: {9: 100.0}, 1: {7: 1.0}})
    assert decode_predictions(examples, features, start, end, max_answer_len=2) == {"x": "w7"}


def test_decode_shape_errors():
    examples = [example(PASSAGE, "w1")]
    features = make_features(examples, make_tokenizer(), training=False, **WINDOWS)
    with pytest.raises(ValueError, match="N = 4 features"):
        decode_predictions(examples, features, np.zeros((3, 16)), np.zeros((3, 16)))
    with pytest.raises(ValueError, match="same examples"):
        decode_predictions([], features, np.zeros((4, 16)), np.zeros((4, 16)))


# ------------------------------------------------------------------------------------------------
# Predictions file and CLI
# ------------------------------------------------------------------------------------------------


def test_cli_round_trip(tmp_path, capsys):
    context = "Denver Broncos beat the Carolina Panthers."
    data = write_json(tmp_path / "data.json", squad_dict([("A", [(context, [
        ("q1", "Who won?", [("Denver Broncos", 0)]),
        ("q2", "Who lost?", [("Carolina Panthers", context.index("Carolina")), ("the Carolina Panthers", 20)]),
    ])])]))
    preds = tmp_path / "preds.json"
    write_predictions({"q1": "Denver", "q2": "the Carolina Panthers"}, preds)
    assert read_predictions(preds) == {"q1": "Denver", "q2": "the Carolina Panthers"}
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp file left
    # q1: EM 0, F1 vs "denver broncos" = 2*(1*1/2)/(3/2) = 2/3 | q2: EM 1, F1 1.
    expected = {"exact_match": 50.0, "f1": 100 * (2 / 3 + 1) / 2}
    assert evaluate_main([str(data), str(preds)]) == pytest.approx(expected)
    assert json.loads(capsys.readouterr().out) == pytest.approx(expected)

    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    done = subprocess.run([sys.executable, "-m", "minispanbert.evaluate_qa", str(data), str(preds)],
                          capture_output=True, text=True, cwd=tmp_path, env=env, check=True)
    assert json.loads(done.stdout) == pytest.approx(expected)


def test_cli_errors_are_one_liners(tmp_path):
    data = write_json(tmp_path / "data.json", squad_dict(GOOD))
    with pytest.raises(SystemExit, match=r"^error: .*missing\.json: cannot read"):
        evaluate_main([str(data), str(tmp_path / "missing.json")])
    bad = tmp_path / "bad.json"
    bad.write_text('{"id1": "beta",}', encoding="utf-8")
    with pytest.raises(SystemExit, match=r"^error: .*bad\.json: malformed JSON at line 1 column 16"):
        evaluate_main([str(data), str(bad)])
    bad.write_text('["beta"]', encoding="utf-8")
    with pytest.raises(SystemExit, match=r"^error: .*must be a JSON object"):
        evaluate_main([str(data), str(bad)])
    with pytest.raises(SystemExit, match=r"^error: .*bad\.json: expected a JSON object, got list"):
        evaluate_main([str(bad), str(data)])  # a list where the SQuAD data object should be


# --------------------------------------------------------------------------- the official script as the oracle


def official_v11_evaluate(dataset, predictions):
    """evaluate() of the official SQuAD v1.1 script (evaluate-v1.1.py, Rajpurkar et al.), transcribed:
    it reads only qa["answers"][k]["text"], never answer_start."""
    import re
    import string
    from collections import Counter

    def normalize(s):
        s = s.lower()
        s = "".join(ch for ch in s if ch not in set(string.punctuation))
        s = re.sub(r"\b(a|an|the)\b", " ", s)
        return " ".join(s.split())

    def f1(prediction, ground_truth):
        p, g = normalize(prediction).split(), normalize(ground_truth).split()
        num_same = sum((Counter(p) & Counter(g)).values())
        if num_same == 0:
            return 0
        precision, recall = num_same / len(p), num_same / len(g)
        return 2 * precision * recall / (precision + recall)

    def em(prediction, ground_truth):
        return normalize(prediction) == normalize(ground_truth)

    f1_sum = em_sum = total = 0
    for article in dataset:
        for paragraph in article["paragraphs"]:
            for qa in paragraph["qas"]:
                total += 1
                if qa["id"] not in predictions:
                    continue
                truths = [a["text"] for a in qa["answers"]]
                em_sum += max(em(predictions[qa["id"]], t) for t in truths)
                f1_sum += max(f1(predictions[qa["id"]], t) for t in truths)
    return {"exact_match": 100.0 * em_sum / total, "f1": 100.0 * f1_sum / total}


def test_evaluate_qa_equals_the_official_script_when_answer_offsets_are_wrong(tmp_path, capsys):
    context = "Denver Broncos beat the Carolina Panthers in Santa Clara in February."
    data = squad_dict([("A", [(context, [
        ("q1", "Who won?", [("Denver Broncos", 0), ("Broncos", 99)]),          # an offset past the end
        ("q2", "Who lost?", [("Carolina Panthers", 3), ("the Panthers", -5)]),  # pointing at other text, negative
        ("q3", "Where?", [("Santa Clara", 45)]),                               # correct
        ("q4", "When?", [("February", 0)]),
    ])]), ("B", [(context, [("q5", "Who?", [("Denver", 1)])])])])
    del data["data"][1]["paragraphs"][0]["qas"][0]["answers"][0]["answer_start"]  # absent: the script never reads it
    path = write_json(tmp_path / "wrong-offsets.json", data)
    predictions = {"q1": "the Broncos", "q2": "Panthers", "q3": "Santa Clara", "q5": "Denver Broncos"}  # q4 missing
    preds = tmp_path / "preds.json"
    write_predictions(predictions, preds)
    expected = official_v11_evaluate(data["data"], predictions)
    assert 0 < expected["f1"] < 100
    assert evaluate_main([str(path), str(preds)]) == pytest.approx(expected, abs=1e-12)
    # training keeps only the answers whose offsets point at their text, and counts the others
    kept, dropped = answers_with_valid_offsets(read_squad(path))
    assert dropped == 5 and [(e.qid, e.answers) for e in kept] == [("q1", (("Denver Broncos", 0),)),
                                                                     ("q3", (("Santa Clara", 45),))]


@pytest.mark.parametrize("seed", range(3))
def test_evaluate_equals_the_official_script_on_random_predictions(seed):
    rng = np.random.default_rng(seed)
    words = "the a an Denver Broncos beat Carolina Panthers , . ! in Santa Clara February 2016".split()
    qas = [(f"q{i}", "?", [(" ".join(rng.choice(words, rng.integers(1, 5))), int(rng.integers(-3, 50)))
                           for _ in range(rng.integers(1, 4))]) for i in range(40)]
    data = squad_dict([("A", [("some context", qas)])])
    predictions = {qid: " ".join(rng.choice(words, rng.integers(0, 5))) for qid, _, _ in qas if rng.random() < 0.9}
    assert evaluate(parse_squad(data), predictions) == pytest.approx(official_v11_evaluate(data["data"], predictions),
                                                                     abs=1e-12)


def test_decode_breaks_a_tie_between_windows_in_favour_of_the_first():
    """Google's run_squad.write_predictions sorts the candidates of all windows with Python's stable
    sorted(..., key=start_logit + end_logit, reverse=True), the windows in order, so of two equally
    scored spans the first window's is the answer. Windows 0 and 1 each hold one span scoring 20:
    (2, 3) starting at a token window 0 owns, (7, 8) at one window 1 owns (test_max_context_hand_computed)."""
    examples = [example(PASSAGE, "w1")]
    features = make_features(examples, make_tokenizer(), training=False, **WINDOWS)
    start = passage_logits(features, {0: {2: 10.0}, 1: {7: 10.0}})
    end = passage_logits(features, {0: {3: 10.0}, 1: {8: 10.0}})
    assert decode_predictions(examples, features, start, end, max_answer_len=2) == {"x": "w2 w3"}
    start = passage_logits(features, {0: {2: 9.0}, 1: {7: 10.0}})  # not a tie: window 1's span wins
    assert decode_predictions(examples, features, start, end, max_answer_len=2) == {"x": "w7 w8"}
