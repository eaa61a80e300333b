"""Pooling functions against plain per-row numpy loops."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgeemb.encode import pooling


def reference(tokens, mask, how):
    out = []
    for t, m in zip(tokens, mask):
        kept = t[m.astype(bool)]
        if how == "mean":
            out.append(kept.mean(0))
        elif how == "max":
            out.append(kept.max(0))
        elif how == "cls":
            out.append(t[0])
        else:
            out.append(t[np.nonzero(m)[0][-1]])
    return np.stack(out)


@settings(max_examples=40, deadline=None)
@given(batch=st.integers(1, 5), seq=st.integers(1, 9), left=st.booleans(), seed=st.integers(0, 1000))
def test_pooling_matches_reference(batch, seq, left, seed):
    rng = np.random.default_rng(seed)
    tokens = rng.normal(size=(batch, seq, 6)).astype(np.float32)
    lengths = rng.integers(1, seq + 1, size=batch)
    mask = np.zeros((batch, seq), np.int64)
    for i, n in enumerate(lengths):
        if left:
            mask[i, seq - n:] = 1
        else:
            mask[i, :n] = 1
    for how in ("mean", "max", "last") + (() if left else ("cls",)):
        np.testing.assert_allclose(pooling.pool(tokens, mask, how), reference(tokens, mask, how), rtol=1e-5, atol=1e-6)


def test_normalize_and_truncate():
    x = np.array([[3.0, 4.0, 0.0], [0.0, 0.0, 0.0]], np.float32)
    n = pooling.normalize(x)
    np.testing.assert_allclose(n[0], [0.6, 0.8, 0.0])
    assert not np.isnan(n).any() and (n[1] == 0).all()
    t = pooling.truncate_dim(np.array([[1.0, 1.0, 5.0]], np.float32), 2)
    np.testing.assert_allclose(t, [[2 ** -0.5, 2 ** -0.5]], rtol=1e-6)
    with pytest.raises(ValueError, match="truncate"):
        pooling.truncate_dim(x, 4)
    with pytest.raises(ValueError, match="unknown pooling"):
        pooling.pool(x[None], np.ones((1, 2)), "median")
