"""Sentence bundles: a sentence-transformers folder, or one BERT-family file (E5S1, GGUF) with its tokenizer."""
