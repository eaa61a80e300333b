"""What a static export can be asked for (file dialects, table precisions, pooling, segmentation); light, so the
CLI reads it without numpy."""
from __future__ import annotations

FORMATS = ("word2vec-bin", "word2vec-text", "glove", "fasttext-vec", "fasttext-bin")
QUANTIZATIONS = ("none", "fp16", "int8")  # the shared vocabulary's subset (common/quantization.py); fp32 = none
POOLINGS = ("sif", "mean")
LOWERCASE = ("auto", "yes", "no")
SEGMENTATIONS = ("auto", "words", "longest-match")
