"""SST-2 and WNUT-17 readers: the files parse as documented, every bad input is ONE ValueError line
naming the file and line, and word-piece label alignment puts each word's tag on its first piece."""
import numpy as np
import pytest

from minispanbert.data import train_tokenizer
from minispanbert.finetune.sst2 import Sentence, read_sst2, sentence_arrays
from minispanbert.finetune.wnut17 import (
    TAG_IDS,
    TAGS,
    TaggedSentence,
    decode_tags,
    read_conll,
    tagged_arrays,
    write_conll_predictions,
)
from minispanbert.layers.cross_entropy import IGNORE_INDEX

SST2 = "sentence\tlabel\nit 's a charming journey . \t1\nunflinchingly bleak \t0\n"
CONLL = "@paulwalk\tO\nEmpire\tB-location\nState\tI-location\n\nESB\tB-location\n.\tO\n"


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def one_line_error(reader, path, *fragments):
    with pytest.raises(ValueError) as exc:
        reader(path)
    message = str(exc.value)
    assert "\n" not in message and message.startswith(str(path)), message
    for fragment in fragments:
        assert fragment in message, message


def test_sst2_reads_labelled_and_unlabelled_files(tmp_path):
    assert read_sst2(write(tmp_path, "dev.tsv", SST2)) == [Sentence("it 's a charming journey .", 1),
                                                           Sentence("unflinchingly bleak", 0)]
    test = read_sst2(write(tmp_path, "test.tsv", "index\tsentence\n0\tuneasy mishmash .\n"))
    assert test == [Sentence("uneasy mishmash .", None)]


@pytest.mark.parametrize("text, fragments", [
    ("", ["the file is empty"]),
    ("sentence\tlabel\n", ["a header but no sentences"]),
    ("text,label\nfine,1\n", [":1:", "header"]),
    (SST2 + "too\tmany\tcolumns\n", [":4:", "expected 2 tab-separated columns", "found 3"]),
    (SST2 + "no tab here\n", [":4:", "found 1"]),
    (SST2 + "a fine film\tpositive\n", [":4:", "unknown label 'positive'"]),
    (SST2 + "\t1\n", [":4:", "sentence is empty"]),
])
def test_sst2_bad_inputs_are_one_line(tmp_path, text, fragments):
    one_line_error(read_sst2, write(tmp_path, "bad.tsv", text), *fragments)
    one_line_error(read_sst2, tmp_path / "absent.tsv", "no such file")


def test_conll_reads_sentences(tmp_path):
    sentences = read_conll(write(tmp_path, "x.conll", "\n" + CONLL + "\n\n"))
    assert sentences == [TaggedSentence(("@paulwalk", "Empire", "State"), ("O", "B-location", "I-location")),
                         TaggedSentence(("ESB", "."), ("B-location", "O"))]
    assert len(TAGS) == 13 and TAGS[0] == "O" and TAG_IDS["I-product"] == 12


@pytest.mark.parametrize("text, fragments", [
    ("\n\n", ["the file is empty"]),
    (CONLL + "Paris B-location\n", [":7:", "expected 2 tab-separated columns", "found 1"]),
    (CONLL + "Paris\tB-location\textra\n", [":7:", "found 3"]),
    (CONLL + "Paris\tB-city\n", [":7:", "unknown tag 'B-city'"]),
    (CONLL + "Paris\tb-location\n", [":7:", "unknown tag"]),
])
def test_conll_bad_inputs_are_one_line(tmp_path, text, fragments):
    one_line_error(read_conll, write(tmp_path, "bad.conll", text), *fragments)


def test_mismatched_words_and_tags_are_one_line(tmp_path):
    with pytest.raises(ValueError, match="2 words but 1 tags"):
        TaggedSentence(("a", "b"), ("O",))
    sentences = read_conll(write(tmp_path, "x.conll", CONLL))
    with pytest.raises(ValueError, match="2 words but 1 tags"):
        write_conll_predictions(sentences, [["O", "O", "O"], ["O"]], tmp_path / "p.conll")
    assert not (tmp_path / "p.conll").exists()


@pytest.fixture(scope="module")
def tokenizer():
    # a vocabulary so small that the long words split into several pieces
    return train_tokenizer(["Empire State Building is in New York", "the Esbjerg stadium"] * 5, 60)


def test_label_sits_on_the_first_word_piece(tokenizer):
    sentence = TaggedSentence(("the", "Esbjerg", "stadium", "Empire"), ("O", "B-location", "I-location", "B-group"))
    arrays, positions, lost = tagged_arrays([sentence], tokenizer, max_seq_len=64)
    pieces = [tokenizer.id_to_token(i) for i in arrays["input_ids"][0]]
    assert pieces[0] == "[CLS]" and pieces[-1] == "[SEP]" and lost == 0
    assert len(pieces) > 6  # some words became several pieces
    labelled = np.flatnonzero(arrays["labels"][0] != IGNORE_INDEX)
    np.testing.assert_array_equal(labelled, positions[0])
    assert [pieces[p].startswith("##") for p in labelled] == [False] * 4
    assert [TAGS[arrays["labels"][0, p]] for p in labelled] == list(sentence.tags)
    # every other piece of a word is ignored: the pieces after a labelled one up to the next are "##"
    for start, stop in zip(labelled, [*labelled[1:], len(pieces) - 1]):
        assert all(pieces[p].startswith("##") for p in range(start + 1, stop))


def test_words_cut_off_are_counted_and_decoded_as_o(tokenizer):
    sentence = TaggedSentence(("Empire", "State", "Building", "Esbjerg"), ("B-location", "I-location", "I-location", "B-group"))
    arrays, positions, lost = tagged_arrays([sentence], tokenizer, max_seq_len=5)  # room for 3 pieces
    assert arrays["input_ids"].shape == (1, 5) and lost >= 1 and positions[0][-1] == -1
    logits = np.zeros((1, 5, len(TAGS)))
    logits[0, :, TAG_IDS["B-group"]] = 1.0
    decoded = decode_tags(logits, positions)[0]
    assert decoded[-1] == "O" and decoded[0] == "B-group"
    # exactly the words whose first piece is not among the 3 kept are lost; [SEP] carries no label
    # ("in New York" is in, Ne, ##w, Yo, ##r, ##k: York's first piece would sit where [SEP] goes)
    for words in (sentence.words, ("in", "New", "York")):
        arrays, positions, lost = tagged_arrays([TaggedSentence(words, ("O",) * len(words))], tokenizer, max_seq_len=5)
        word_ids = tokenizer.encode(list(words), is_pretokenized=True, add_special_tokens=False).word_ids
        first_piece = [word_ids.index(w) for w in range(len(words))]
        assert lost == sum(p >= 3 for p in first_piece), words
        assert list(positions[0]) == [p + 1 if p < 3 else -1 for p in first_piece], words
        assert arrays["labels"][0, 4] == IGNORE_INDEX, words


def test_sentence_arrays(tokenizer):
    short = len(tokenizer.encode("New York", add_special_tokens=False).ids)
    arrays, cut = sentence_arrays([Sentence("New York", 1), Sentence("the Empire State Building is in New York", 0)],
                                  tokenizer, max_seq_len=short + 3)
    assert cut == 1 and arrays["input_ids"].shape == (2, short + 3)
    np.testing.assert_array_equal(arrays["labels"], [1, 0])
    assert arrays["attention_mask"][1].all() and not arrays["attention_mask"][0].all()
    assert tokenizer.id_to_token(int(arrays["input_ids"][1, -1])) == "[SEP]"
