"""Static bundles: one vector per token, pooled in numpy (no onnxruntime), and gensim-style word queries."""
