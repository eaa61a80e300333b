"""Shared by every exporter: staging and manifests, ONNX tools, parity, the quantisation vocabulary, errors."""
