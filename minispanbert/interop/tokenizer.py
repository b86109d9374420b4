"""BERT's WordPiece tokenizer as a Hugging Face model folder describes it, through the ``tokenizers``
library: the same ids as ``transformers.BertTokenizerFast`` (v5's ``BertTokenizer``), which builds
exactly this pipeline.

    normalizer     BertNormalizer(clean_text, handle_chinese_chars = tokenize_chinese_chars,
                                  strip_accents, lowercase = do_lower_case)
                   strip_accents None means "as lowercase" (original BERT: uncased models strip
                   accents, cased ones keep them)
    pre-tokenizer  BertPreTokenizer: split on whitespace, every punctuation character is a word
    model          WordPiece over vocab.txt (line i is id i), "##" continuation pieces, words longer
                   than 100 characters -> [UNK]
    added tokens   [PAD] [UNK] [CLS] [SEP] [MASK], matched in the raw text ("[MASK]" is one token)
    post-processor [CLS] A [SEP] (B [SEP]) with type ids 0 / 1
    decoder        WordPiece (drop "##" and join)

Where the flags come from (as ``transformers``): ``tokenizer_config.json``'s ``do_lower_case``
(default True, also when the file is absent: a cased checkpoint shipped without it, such as
SpanBERT's, needs BERT-cased's tokenizer_config.json next to its vocab.txt), ``strip_accents``
(default None) and ``tokenize_chinese_chars`` (default True). A folder with ``tokenizer.json`` uses
that file as written (Hugging Face writes it consistent with tokenizer_config.json); otherwise
``vocab.txt`` plus the flags.

minispanbert's own tokenizer (`minispanbert.data.tokenizer`) is this same pipeline with
lowercase=False and no post-processor; :func:`save_bert_tokenizer` writes either as a folder that
``AutoTokenizer.from_pretrained`` opens.
"""
from __future__ import annotations

import json
from pathlib import Path

from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

from minispanbert.data.tokenizer import without_padding_or_truncation
from minispanbert.engine.runs.atomic import write_text_atomic

VOCAB_FILE = "vocab.txt"
TOKENIZER_FILE = "tokenizer.json"
TOKENIZER_CONFIG_FILE = "tokenizer_config.json"
SPECIAL_TOKENS_MAP_FILE = "special_tokens_map.json"
SPECIAL = {"unk_token": "[UNK]", "sep_token": "[SEP]", "pad_token": "[PAD]", "cls_token": "[CLS]",
           "mask_token": "[MASK]"}


def read_vocab(path) -> dict[str, int]:
    """vocab.txt -> {token: id}, id = line number (trailing newline stripped, as transformers)."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").split("\n")
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot read {path} ({exc}): download the model's vocab.txt again") from None
    if lines and lines[-1] == "":
        lines.pop()
    vocab: dict[str, int] = {}
    for index, token in enumerate(lines):
        vocab[token] = index  # a duplicated line keeps its LAST id, as transformers' load_vocab and the Rust WordPiece
    for token in (SPECIAL["unk_token"], SPECIAL["cls_token"], SPECIAL["sep_token"]):
        if token not in vocab:
            raise ValueError(f"{path} has no {token} token: it is not a BERT vocabulary")
    return vocab


def bert_wordpiece(vocab: dict[str, int], *, do_lower_case: bool = True, strip_accents: bool | None = None,
                   tokenize_chinese_chars: bool = True) -> Tokenizer:
    """The ``BertTokenizerFast`` pipeline (module docstring) over ``vocab``."""
    tok = Tokenizer(models.WordPiece(vocab, unk_token=SPECIAL["unk_token"], continuing_subword_prefix="##",
                                     max_input_chars_per_word=100))
    tok.normalizer = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=tokenize_chinese_chars,
                                                strip_accents=strip_accents, lowercase=do_lower_case)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece(prefix="##")
    # The specials are matched in the raw text before normalisation (so "[MASK]" survives lowercasing).
    tok.add_special_tokens([AddedToken(token, special=True, normalized=False)
                            for token in (SPECIAL[k] for k in ("pad_token", "unk_token", "cls_token", "sep_token",
                                                                "mask_token")) if token in vocab])
    add_bert_post_processor(tok)
    return tok


def add_bert_post_processor(tok: Tokenizer) -> None:
    """Make ``encode(a, b)`` give ``[CLS] a [SEP] b [SEP]`` with type ids 0 / 1, as BERT."""
    cls, sep = SPECIAL["cls_token"], SPECIAL["sep_token"]
    tok.post_processor = processors.TemplateProcessing(
        single=f"{cls}:0 $A:0 {sep}:0", pair=f"{cls}:0 $A:0 {sep}:0 $B:1 {sep}:1",
        special_tokens=[(cls, tok.token_to_id(cls)), (sep, tok.token_to_id(sep))])


def tokenizer_flags(directory) -> dict:
    """do_lower_case / strip_accents / tokenize_chinese_chars from tokenizer_config.json (HF defaults)."""
    flags = {"do_lower_case": True, "strip_accents": None, "tokenize_chinese_chars": True}
    path = Path(directory) / TOKENIZER_CONFIG_FILE
    if path.is_file():
        try:
            saved = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"{path} is not valid JSON ({exc}): download it again") from None
        flags.update({key: saved[key] for key in flags if key in saved})
    return flags


def read_tokenizer_json(path) -> Tokenizer:
    """A tokenizer.json file (any special-token ids), with a one-line ValueError when it is corrupt."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"tokenizer file {path} not found: pass a tokenizer.json or a model folder")
    try:
        tok = Tokenizer.from_file(str(path))
    except Exception as exc:  # tokenizers raises a bare Exception for bad JSON or schema
        first_line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ValueError(f"{path} is not a readable tokenizer.json ({first_line}): pass a tokenizer.json or a model "
                         "folder (if it is one, download or save it again)") from None
    special_token_ids(tok)
    return without_padding_or_truncation(tok)


def load_bert_tokenizer(directory) -> Tokenizer | None:
    """The folder's tokenizer (tokenizer.json, else vocab.txt + tokenizer_config.json), or None when
    it has neither file."""
    directory = Path(directory)
    if (directory / TOKENIZER_FILE).is_file():
        return read_tokenizer_json(directory / TOKENIZER_FILE)
    if (directory / VOCAB_FILE).is_file():
        return bert_wordpiece(read_vocab(directory / VOCAB_FILE), **tokenizer_flags(directory))
    return None


def special_token_ids(tok: Tokenizer) -> dict[str, int]:
    """{"cls": id, "sep": id, "pad": id, "mask": id, "unk": id} (HF BERT: 101, 102, 0, 103, 100;
    minispanbert's own: 2, 3, 0, 4, 1; a RoBERTa byte-level BPE: <s> 0, </s> 2, <pad> 1, <mask> 4,
    <unk> 3). Raises when [CLS], [SEP] or [PAD] is missing."""
    ids = {name.removesuffix("_token").replace("_", ""): tok.token_to_id(token) for name, token in SPECIAL.items()}
    if ids["cls"] is None and tok.token_to_id("<s>") is not None:  # RoBERTa's byte-level BPE (data/bpe_tokenizer.py)
        ids = {name: tok.token_to_id(token) for name, token in
               (("cls", "<s>"), ("sep", "</s>"), ("pad", "<pad>"), ("mask", "<mask>"), ("unk", "<unk>"))}
    missing = [SPECIAL[f"{name}_token"] for name in ("cls", "sep", "pad") if ids[name] is None]
    if missing:
        raise ValueError(f"the tokenizer has no {', '.join(missing)} token: it is not a BERT tokenizer")
    return ids


def _normalizer_flags(tok: Tokenizer) -> dict:
    """The BertNormalizer flags of ``tok`` as tokenizer_config.json spells them."""
    state = json.loads(tok.to_str()).get("normalizer") or {}
    if state.get("type") != "BertNormalizer":
        raise ValueError("only BERT tokenizers (BertNormalizer + WordPiece) can be saved as a Hugging Face BERT folder")
    return {"do_lower_case": bool(state.get("lowercase", True)), "strip_accents": state.get("strip_accents"),
            "tokenize_chinese_chars": bool(state.get("handle_chinese_chars", True))}


def save_bert_tokenizer(tok: Tokenizer, directory, *, model_max_length: int) -> list[str]:
    """Write vocab.txt, tokenizer.json (with BERT's [CLS]/[SEP] post-processor), tokenizer_config.json
    and special_tokens_map.json into ``directory`` (each atomically); returns the file names."""
    directory = Path(directory)
    flags = _normalizer_flags(tok)
    special_token_ids(tok)
    tok = without_padding_or_truncation(Tokenizer.from_str(tok.to_str()))  # a copy: the caller's keeps its settings
    add_bert_post_processor(tok)
    by_id = sorted(tok.get_vocab(with_added_tokens=True).items(), key=lambda item: item[1])
    if [i for _, i in by_id] != list(range(len(by_id))):
        raise ValueError("the tokenizer's ids are not 0..V-1 without gaps: it cannot be written as vocab.txt")
    specials = {name: token for name, token in SPECIAL.items() if tok.token_to_id(token) is not None}
    config = {"tokenizer_class": "BertTokenizer", **flags, "model_max_length": model_max_length, **specials}
    write_text_atomic(directory / VOCAB_FILE, "".join(token + "\n" for token, _ in by_id))
    write_text_atomic(directory / TOKENIZER_FILE, tok.to_str())
    write_text_atomic(directory / TOKENIZER_CONFIG_FILE, json.dumps(config, indent=2) + "\n")
    write_text_atomic(directory / SPECIAL_TOKENS_MAP_FILE, json.dumps(specials, indent=2) + "\n")
    return [VOCAB_FILE, TOKENIZER_FILE, TOKENIZER_CONFIG_FILE, SPECIAL_TOKENS_MAP_FILE]
