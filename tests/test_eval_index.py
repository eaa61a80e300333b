"""The eval suite's retrieval through edgeemb.Index finds what exact search finds on an easy case."""
import numpy as np

from edgeemb.cli.evaluate import IndexForEval


def test_index_adapter_returns_nearest_ids_and_pads_short_results():
    rng = np.random.default_rng(0)
    docs = rng.normal(size=(200, 16)).astype(np.float32)
    index = IndexForEval(16)
    index.add(docs, np.arange(200))
    ids, scores = index.search(docs[:5], 3)
    assert ids[:, 0].tolist() == [0, 1, 2, 3, 4]
    np.testing.assert_allclose(scores[:, 0], 1.0, atol=1e-5)
    small = IndexForEval(16)
    small.add(docs[:2], np.arange(2))
    ids, _ = small.search(docs[:1], 5)  # k beyond the live items: padded with -1, which the suite ignores
    assert ids[0, :2].tolist() == [0, 1] and (ids[0, 2:] == -1).all()
