"""The real-weights demos on tiny Hugging Face folders: fill-mask (batched with padding, against
unbatched full-sequence MLM logits and, when installed, against transformers) and SQuAD prediction
(length-sorted, trimmed batches against one full-width pass through the QA model; official scores),
plus their one-line errors."""
import json

import numpy as np
import pytest

from minispanbert.config import ModelConfig
from minispanbert.data import train_tokenizer
from minispanbert.finetune.qa_head import init_qa_params, qa_forward
from minispanbert.finetune.squad import decode_predictions, evaluate, features_to_arrays, make_features, read_squad
from minispanbert.interop.fill_mask import main as fill_mask_main
from minispanbert.interop.heads import bert_outputs
from minispanbert.interop.huggingface import load_pretrained, save_pretrained
from minispanbert.interop.predict_qa import main as predict_qa_main
from minispanbert.model.spanbert_loss import init_pretraining_params

CONTEXTS = [
    ("Amazon", "The Amazon River flows through Brazil and Peru. It is the largest river by discharge volume of "
               "water in the world, and the disputed longest river system in the world.",
     [("q1", "Which countries does the Amazon flow through?", "Brazil and Peru"),
      ("q2", "By what is the Amazon the largest river?", "discharge volume")]),
    ("Paris", "Paris is the capital of France.",
     [("q3", "What is the capital of France?", "Paris")]),
]
TEXTS = ["The capital of France is [MASK].", "[MASK] flows through Brazil and [MASK] , it is the largest river ."]


def squad_file(path):
    data = {"version": "1.1", "data": [
        {"title": title, "paragraphs": [{"context": context, "qas": [
            {"id": qid, "question": q, "answers": [{"text": a, "answer_start": context.index(a)}]}
            for qid, q, a in qas]}]} for title, context, qas in CONTEXTS]}
    path.write_text(json.dumps(data))
    return path


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tokenizer and config shared by the folders below."""
    text = [c for _, c, _ in CONTEXTS] + [q for _, _, qas in CONTEXTS for _, q, _ in qas]
    tok = train_tokenizer(text * 3, vocab_size=120)
    config = ModelConfig(vocab_size=tok.get_vocab_size(), hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=32, max_position_embeddings=64, hidden_dropout_prob=0.0,
                         attention_probs_dropout_prob=0.0, sbo_position_dim=4, sbo_max_targets=5)
    root = tmp_path_factory.mktemp("demos")
    rng = np.random.default_rng(0)
    mlm = init_pretraining_params(config, 0, xp=np, dtype="float32")
    mlm["cls.predictions.bias"] = rng.normal(0, 1, config.vocab_size).astype(np.float32)  # a non-flat distribution
    qa = init_qa_params(config, 1, xp=np, dtype="float32")
    qa["qa_outputs.weight"] = rng.normal(0, 1, (2, 16)).astype(np.float32)
    save_pretrained(root / "mlm", mlm, config, tokenizer=tok)
    save_pretrained(root / "qa", qa, config, tokenizer=tok)
    return root


def test_fill_mask_batched_equals_unbatched_full_logits(tiny, capsys):
    results = fill_mask_main(["--model", str(tiny / "mlm"), "--top-k", "3", "--batch-size", "2", "--dtype", "float64",
                              *TEXTS])
    out, err = capsys.readouterr()
    assert "throughput:" in err and "tokens/s" in err and "The capital of France is [MASK]." in out
    model = load_pretrained(tiny / "mlm", dtype="float64")
    mask_id = model.tokenizer.token_to_id("[MASK]")
    assert [len(r) for r in results] == [1, 2]
    for text, masks in zip(TEXTS, results):
        ids = np.array([model.tokenizer.encode(text).ids])  # [CLS] text [SEP] from the folder's tokenizer
        logits = bert_outputs(model, ids, np.zeros_like(ids), np.ones_like(ids), xp=np)["logits"][0]
        for candidates, position in zip(masks, np.flatnonzero(ids[0] == mask_id)):
            z = logits[position]
            p = np.exp(z - z.max()) / np.exp(z - z.max()).sum()
            best = np.argsort(-p)[:3]
            assert [t for t, _ in candidates] == [model.tokenizer.id_to_token(int(i)) for i in best]
            np.testing.assert_allclose([q for _, q in candidates], p[best], rtol=1e-12)


def test_fill_mask_matches_transformers(tiny):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    hf = transformers.AutoModelForMaskedLM.from_pretrained(tiny / "mlm", attn_implementation="eager").double().eval()
    hf_tok = transformers.AutoTokenizer.from_pretrained(tiny / "mlm")
    results = fill_mask_main(["--model", str(tiny / "mlm"), "--top-k", "4", "--dtype", "float64", *TEXTS])
    for text, masks in zip(TEXTS, results):
        enc = hf_tok(text, return_tensors="pt")
        with torch.no_grad():
            logits = hf(**enc).logits[0]
        positions = (enc["input_ids"][0] == hf_tok.mask_token_id).nonzero().flatten()
        for candidates, position in zip(masks, positions):
            probs = torch.softmax(logits[position], dim=-1)
            top = torch.topk(probs, 4)
            assert [t for t, _ in candidates] == hf_tok.convert_ids_to_tokens(top.indices.tolist())
            np.testing.assert_allclose([q for _, q in candidates], top.values.numpy(), rtol=1e-10)


@pytest.mark.parametrize("args, expect", [
    (["--model", "{qa}", "The capital is [MASK]."], r"has no MLM head .*BertForQuestionAnswering"),
    (["--model", "{mlm}", "No mask here."], r"no \[MASK\] in 'No mask here.'"),
    (["--model", "{missing}", "a [MASK]"], r"model folder .* does not exist"),
])
def test_fill_mask_errors_are_one_line(tiny, capsys, args, expect):
    args = [a.format(qa=tiny / "qa", mlm=tiny / "mlm", missing=tiny / "nothing") for a in args]
    with pytest.raises(SystemExit) as exc_info:
        fill_mask_main(args)
    message = str(exc_info.value.code)
    assert message.startswith("error: ") and "\n" not in message
    assert pytest.importorskip("re").search(expect, message), message


def test_predict_qa_sorted_trimmed_batches_equal_one_full_pass(tiny, tmp_path, capsys):
    data = squad_file(tmp_path / "dev.json")
    windows = ["--max-seq-len", "24", "--doc-stride", "6", "--max-query-len", "8"]
    scores = predict_qa_main(["--model", str(tiny / "qa"), "--data", str(data), "--out", str(tmp_path / "p.json"),
                              "--batch-size", "2", "--dtype", "float64", *windows])
    out, err = capsys.readouterr()
    assert "throughput:" in err and "tokens/s" in err
    predictions = json.loads((tmp_path / "p.json").read_text())
    # reference: every window in one unsorted, untrimmed batch, decoded the same way
    model = load_pretrained(tiny / "qa", dtype="float64")
    examples = read_squad(data)
    features = make_features(examples, model.tokenizer, max_seq_len=24, doc_stride=6, max_query_len=8, training=False)
    assert len(features) > 4 and len({int(f.attention_mask.sum()) for f in features}) > 2  # several lengths
    out_ref, _ = qa_forward(model.params, features_to_arrays(features), model.config, xp=np)
    expected = decode_predictions(examples, features, out_ref.start_logits, out_ref.end_logits)
    assert predictions == expected
    assert scores == evaluate(examples, expected)
    assert json.loads(out.strip().splitlines()[-1]) == {k: round(v, 2) for k, v in scores.items()}


def test_predict_qa_errors_are_one_line(tiny, tmp_path):
    data = squad_file(tmp_path / "dev.json")
    for args, expect in ((["--model", str(tiny / "mlm"), "--data", str(data)], "has no question-answering head"),
                         (["--model", str(tiny / "qa"), "--data", str(tmp_path / "none.json")], "cannot read"),
                         (["--model", str(tiny / "qa"), "--data", str(data), "--max-seq-len", "512"],
                          "exceeds the model's max_position_embeddings 64")):
        with pytest.raises(SystemExit) as exc_info:
            predict_qa_main(args)
        message = str(exc_info.value.code)
        assert message.startswith("error: ") and "\n" not in message and expect in message, message


def test_finetune_qa_from_hf_folder_then_export_and_predict(tiny, tmp_path, capsys):
    """finetune squad --checkpoint takes a Hugging Face folder whose vocabulary puts the specials where
    BERT's does ([CLS]=3 here, not minispanbert's 2); the fine-tuned run exported with export_hf and
    answered by predict_qa gives the same predictions and scores as the fine-tuning run's own evaluation."""
    from minispanbert.finetune.loop import main as finetune_main
    from minispanbert.interop.export_hf import main as export_main
    from minispanbert.interop.tokenizer import bert_wordpiece
    ours = load_pretrained(tiny / "mlm")
    pieces = [t for t, _ in sorted(ours.tokenizer.get_vocab().items(), key=lambda item: item[1])
              if t not in ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")]
    hf_tok = bert_wordpiece({t: i for i, t in enumerate(["[PAD]", "[unused0]", "[UNK]", "[CLS]", "[SEP]", "[MASK]",
                                                         *pieces])}, do_lower_case=False)
    config = ours.config.replace(vocab_size=hf_tok.get_vocab_size())
    params = init_pretraining_params(config, 3, xp=np)
    save_pretrained(tmp_path / "hf", params, config, tokenizer=hf_tok)
    data = squad_file(tmp_path / "dev.json")
    windows = ["--max-seq-len", "64", "--doc-stride", "16", "--max-query-len", "12"]
    result = finetune_main(["squad", "--checkpoint", str(tmp_path / "hf"), "--train", str(data), "--dev", str(data),
                            "--out", str(tmp_path / "run"), "--steps", "150", "--batch-size", "4", "--lr", "5e-3",
                            "--dropout", "0", *windows])
    assert result["scores"]["dev"]["f1"] == 100.0  # the three questions are learned
    fine_tuned = json.loads((tmp_path / "run" / "predictions.json").read_text())
    export_main(["--checkpoint", str(tmp_path / "run"), "--out", str(tmp_path / "hf-qa")])
    exported = load_pretrained(tmp_path / "hf-qa")
    assert exported.architecture == "BertForQuestionAnswering" and exported.tokenizer.token_to_id("[CLS]") == 3
    scores = predict_qa_main(["--model", str(tmp_path / "hf-qa"), "--data", str(data), "--out",
                              str(tmp_path / "p.json"), *windows])
    assert json.loads((tmp_path / "p.json").read_text()) == fine_tuned
    assert scores == result["scores"]["dev"]


def test_fill_mask_names_embedding_rows_beyond_the_vocabulary(tiny):
    """A minispanbert preset's V can exceed its trained vocabulary: such rows print as "<id N>"."""
    from minispanbert.interop.fill_mask import token_text
    tok = load_pretrained(tiny / "mlm").tokenizer
    assert token_text(tok, tok.token_to_id("[MASK]")) == "[MASK]"
    assert token_text(tok, tok.get_vocab_size() + 5) == f"<id {tok.get_vocab_size() + 5}>"
