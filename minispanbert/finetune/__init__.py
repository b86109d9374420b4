"""Fine-tuning a pretrained encoder: one loop (``loop.py``, ``python -m minispanbert.finetune TASK``)
for three tasks, each with its reader, head and official metric (``recipes.py`` says what a task
gives the loop).

    squad.py                   SQuAD 1.1: windows with a doc stride, decoding, the official EM/F1
    qa_head.py                 the start/end head, Linear(H, 2) (SpanBERT §4.1)
    sst2.py                    GLUE SST-2 sentences -> model inputs, sentence labels
    sequence_classification.py the pooler + classifier head (BERT §4.1)
    wnut17.py                  WNUT-17 CoNLL files -> model inputs, first-word-piece tag labels
    token_classification.py    the per-token classifier head (BERT §5.3)
    features.py                [CLS] pieces [SEP] + padding, shared by SST-2 and WNUT-17
    classification_metrics.py  accuracy, precision / recall / F1, confusion matrix
    conlleval.py               entity-level P / R / F1 as conlleval, WNUT-17 surface-form F1
    pretrained_weights.py      a task model's encoder tensors from pretrained weights
    evaluate_qa.py             python -m minispanbert.evaluate_qa DATA.json PREDICTIONS.json
"""
