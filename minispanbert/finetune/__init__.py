"""Fine-tuning tasks beyond pretraining: each file is one data set's reader (with one-line errors
naming the file and line) or one official metric. SQuAD lives in ``minispanbert/squad.py``.

    sst2.py                    GLUE SST-2 sentences -> model inputs, sentence labels
    wnut17.py                  WNUT-17 CoNLL files -> model inputs, first-word-piece tag labels
    features.py                [CLS] pieces [SEP] + padding, shared by both
    classification_metrics.py  accuracy, precision / recall / F1, confusion matrix
    conlleval.py               entity-level P / R / F1 as conlleval, WNUT-17 surface-form F1
"""
