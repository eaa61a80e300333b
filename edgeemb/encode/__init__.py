"""Encoding: backends (the onnxruntime session), batching, pooling and the Encoder that ties them together."""
