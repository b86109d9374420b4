"""The networks built from the layers: the BERT encoder, SpanBERT's MLM and SBO heads, the QA head."""
