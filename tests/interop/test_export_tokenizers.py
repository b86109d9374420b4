"""Every family's export tokenises as its run did (issue #25): a micro run of each objective, its
Hugging Face folder, and ``transformers.AutoTokenizer.from_pretrained(folder)`` must give, for cased,
accented text and for its plain lower-case twin, exactly the ids the run's own code (encode, pack,
make_batch) feeds the model: ``[CLS] A [SEP]`` / ``<s> A </s>``, and for the pair objectives (BERT's
NSP, ALBERT's SOP) ``[CLS] A [SEP] B [SEP]`` with its token type ids. Exports that lower-cased the
cased vocabulary (ELECTRA) or added no specials (RoBERTa, ALBERT) fail here."""
import numpy as np
import pytest
from tokenizers import Tokenizer

from minispanbert import config as config_module
from minispanbert.config import ModelConfig
from minispanbert.data.tokenizer import unigram_distribution
from minispanbert.engine.runs.checkpoint import resolve_checkpoint
from minispanbert.engine.trainer import TOKENIZER_FILE, RunConfig, run
from minispanbert.family.electra import DISCRIMINATOR_FOLDER, GENERATOR_FOLDER, HF_FOLDER
from minispanbert.family.objectives import OBJECTIVES, get_objective
from minispanbert.interop.export_hf import main as export_main
from minispanbert.interop.tokenizer import special_token_ids
from minispanbert.layers.cross_entropy import IGNORE_INDEX

from micro_runs import write_corpus

CASED = "Apple Café naïve ÅNGSTRÖM über Zürich"
UNCASED = "apple cafe naive angstrom uber zurich"
PAIR_OBJECTIVES = ("bert", "albert")
MICRO = ModelConfig(vocab_size=320, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                    intermediate_size=64, max_position_embeddings=64)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Random sentences that use both texts' words, so the vocabularies hold cased and plain pieces."""
    words = CASED.split() + UNCASED.split()
    return write_corpus(tmp_path_factory.mktemp("corpus") / "corpus.txt", documents=6, lines=4, extra_words=words)


def fed_to_the_model(name, tok, cfg, documents):
    """The first row of the batch the run's own code builds from ``documents``, masking undone:
    (ids, token type ids) of its real tokens."""
    objective = get_objective(name)
    model_config = objective.model_config(MICRO, cfg)
    rng = np.random.default_rng(0)
    encoded = objective.encode_documents(tok, documents)
    examples = objective.pack(encoded, seq_len=cfg.seq_len, rng=rng)
    unigram = unigram_distribution([ids for doc in encoded for ids, _ in doc], model_config.vocab_size)
    batch = objective.make_batch(examples[:1], rng, cfg=cfg, model_config=model_config, unigram=unigram)
    real = batch.attention_mask[0] == 1
    ids = np.where(batch.mlm_labels != IGNORE_INDEX, batch.mlm_labels, batch.input_ids)[0]
    return ids[real].tolist(), batch.token_type_ids[0][real].tolist()


@pytest.mark.parametrize("name", list(OBJECTIVES))
def test_auto_tokenizer_of_every_export_gives_the_runs_own_ids(name, corpus, tmp_path, monkeypatch):
    transformers = pytest.importorskip("transformers")
    monkeypatch.setitem(config_module.PRESETS, "micro", MICRO)
    cfg = RunConfig(objective=name, preset="micro", data=str(corpus), out=str(tmp_path / "run"), steps=1,
                    batch_size=2, seq_len=48, eval_every=1, save_every=1, eval_batches=1)
    run(cfg, log=lambda _msg: None)
    tok = get_objective(name).load_tokenizer(resolve_checkpoint(tmp_path / "run") / TOKENIZER_FILE)
    if name == "electra":  # its run wrote both networks' folders when it finished
        folders = [tmp_path / "run" / HF_FOLDER / network for network in (DISCRIMINATOR_FOLDER, GENERATOR_FOLDER)]
    else:
        export_main(["--checkpoint", str(tmp_path / "run"), "--out", str(tmp_path / "hf")])
        folders = [tmp_path / "hf"]
    specials = special_token_ids(tok)
    for folder in folders:
        hf = transformers.AutoTokenizer.from_pretrained(folder)
        raw = Tokenizer.from_file(str(folder / TOKENIZER_FILE))  # the file as tokenizers and transformers 4 read it
        for text in (CASED, UNCASED):
            ids = hf(text)["input_ids"]
            if name in PAIR_OBJECTIVES:  # trained on pairs only: a single text is the pair's A segment
                pair_ids, types = fed_to_the_model(name, tok, cfg, [[text], [CASED]])
                assert ids == [i for i, t in zip(pair_ids, types) if t == 0], (folder, text)
            else:
                assert ids == fed_to_the_model(name, tok, cfg, [[text]])[0], (folder, text)
            assert raw.encode(text).ids == ids, (folder, text)
            assert hf.decode(ids, skip_special_tokens=True) == text, folder
        if name in PAIR_OBJECTIVES:
            expected = fed_to_the_model(name, tok, cfg, [[CASED], [UNCASED]])
            pair, raw_pair = hf(CASED, UNCASED), raw.encode(CASED, UNCASED)
            assert (pair["input_ids"], pair["token_type_ids"]) == expected == (raw_pair.ids, raw_pair.type_ids), folder
        assert [hf.cls_token_id, hf.sep_token_id, hf.pad_token_id, hf.mask_token_id, hf.unk_token_id] == \
            [specials[key] for key in ("cls", "sep", "pad", "mask", "unk")], folder
