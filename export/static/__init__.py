"""Static bundles: word-vector file readers, the table bundle writer, and model2vec-style distillation."""
