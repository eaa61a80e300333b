"""Decoder LLMs as encoders: sources (HF, GGUF, llama2.c), the graph, and the bundle export."""
