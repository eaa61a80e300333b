"""Helpers shared by the export parity tests (torch tests only: importing this needs torch)."""
import json
import os

import numpy as np
import pytest
import torch


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """Tiny models: one torch thread is far faster than two spinning ones on a shared machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def report(**row):
    """Append measured figures to $EDGEEMB_PARITY_REPORT (benchmarks/studies/llm.py --arch-parity)."""
    path = os.environ.get("EDGEEMB_PARITY_REPORT")
    if path:
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps({k: round(float(v), 6) if isinstance(v, np.floating) else v
                                for k, v in row.items()}) + "\n")


def cosines(a, b):
    """Cosine along the last axis."""
    a = a / np.linalg.norm(a, axis=-1, keepdims=True)
    b = b / np.linalg.norm(b, axis=-1, keepdims=True)
    return (a * b).sum(-1)
