"""Hand-computed checks of the evaluation metrics."""

import math

import numpy as np
import pytest

from edgeemb.eval import metrics
from edgeemb.eval.metrics import (
    analogy_3cosadd,
    analogy_3cosmul,
    average_precision,
    best_threshold_accuracy,
    kmeans,
    mrr_at_k,
    ndcg_at_k,
    pearson,
    recall_at_k,
    spearman,
    v_measure,
)
from edgeemb.eval.tasks import run_task

QRELS = {"d1": 1, "d3": 2, "d5": 3}
RUN = ["d1", "d2", "d3", "d4"]


def test_ndcg_graded_linear_gain():
    # DCG@3 = 1/log2(2) + 0/log2(3) + 2/log2(4) = 1 + 1 = 2
    # IDCG@3 from sorted qrels (3, 2, 1) = 3/1 + 2/log2(3) + 1/2
    # (exponential gain 2^rel - 1 would give 2.5 / (7 + 3/log2(3) + 0.5) = 0.266 instead)
    assert ndcg_at_k(RUN, QRELS, 3) == pytest.approx(2 / (3 + 2 / math.log2(3) + 0.5))
    assert ndcg_at_k(RUN, QRELS, 1) == pytest.approx(1 / 3)
    assert ndcg_at_k(["d5", "d3", "d1"], QRELS, 10) == pytest.approx(1.0)
    assert ndcg_at_k(RUN, {"d9": 0}, 10) == 0.0


def test_recall_and_mrr():
    assert recall_at_k(RUN, QRELS, 3) == pytest.approx(2 / 3)
    assert recall_at_k(RUN, QRELS, 1) == pytest.approx(1 / 3)
    assert mrr_at_k(["x", "d3", "d1"], QRELS, 10) == 0.5
    assert mrr_at_k(["x", "d3"], QRELS, 1) == 0.0


def test_spearman_ties_hand_computed():
    # average ranks: x -> (1, 2.5, 2.5, 4), y -> (1, 3, 2, 4); centred dot 4.5, sums of squares 4.5 and 5
    # rho = 4.5 / sqrt(4.5 * 5) = sqrt(0.9)   (ordinal ranks without tie averaging would give 0.8)
    assert spearman([1, 2, 2, 3], [1, 3, 2, 4]) == pytest.approx(math.sqrt(0.9))
    assert spearman([3, 2, 1], [1, 2, 3]) == pytest.approx(-1.0)
    assert pearson([1, 2, 3], [2, 4, 6.5]) == pytest.approx(np.corrcoef([1, 2, 3], [2, 4, 6.5])[0, 1])


def test_spearman_nan_safe():
    assert math.isnan(spearman([1, 1, 1], [1, 2, 3]))
    assert math.isnan(spearman([1], [2]))
    assert math.isnan(spearman([1, float("nan"), 3], [1, 2, 3]))
    assert math.isnan(pearson([], []))


def test_spearman_matches_scipy():
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 6, 200), rng.integers(0, 4, 200) + 0.1 * rng.integers(0, 6, 200)
    assert spearman(x, y) == pytest.approx(stats.spearmanr(x, y).statistic)


def test_best_threshold_accuracy():
    # predicting the top 2 (or top 4) as positive gets 4 of 5 right; the first such cut is at 0.75
    acc, thr = best_threshold_accuracy([0.9, 0.8, 0.7, 0.6, 0.5], [1, 1, 0, 1, 0])
    assert acc == pytest.approx(0.8) and thr == pytest.approx(0.75)
    # tied scores cannot be split
    assert best_threshold_accuracy([0.5, 0.5], [1, 0])[0] == pytest.approx(0.5)
    assert best_threshold_accuracy([0.1, 0.2], [1, 1])[0] == 1.0


def test_average_precision():
    # precision at each positive: 1, 1, 3/4
    assert average_precision([0.9, 0.8, 0.7, 0.6, 0.5], [1, 1, 0, 1, 0]) == pytest.approx((1 + 1 + 0.75) / 3)
    # ties form one threshold: R 0.5 at P 1, then R 1 at P 2/3 (ignoring ties would give 1.0)
    assert average_precision([0.9, 0.5, 0.5], [1, 1, 0]) == pytest.approx(0.5 + 0.5 * 2 / 3)


def test_v_measure():
    assert v_measure([0, 0, 1, 1, 2, 2], [5, 5, 3, 3, 9, 9]) == pytest.approx(1.0)
    assert v_measure([0, 0, 1, 1], [0, 0, 0, 0]) == pytest.approx(0.0)

    # true (0,0,1,1) vs pred (0,0,0,1): H(C) = ln 2, H(K) = H(3/4, 1/4), H(C|K) = 3/4 H(2/3, 1/3), H(K|C) = 1/2 ln 2
    def h(*p):
        return -sum(q * math.log(q) for q in p)

    hom = 1 - 0.75 * h(2 / 3, 1 / 3) / math.log(2)
    com = 1 - 0.5 * math.log(2) / h(0.75, 0.25)
    assert v_measure(["a", "a", "b", "b"], [0, 0, 0, 1]) == pytest.approx(2 * hom * com / (hom + com))
    assert v_measure([0, 0, 1, 1], [0, 0, 0, 1]) == pytest.approx(0.3437, abs=1e-4)


def test_kmeans_recovers_blobs():
    rng = np.random.default_rng(1)
    centres = np.array([[0, 0], [20, 0], [0, 20], [20, 20]])
    X = np.concatenate([c + rng.normal(size=(30, 2)) for c in centres])
    truth = np.repeat(np.arange(4), 30)
    for seed in range(3):
        labels = kmeans(X, 4, seed=seed)
        assert labels.shape == (120,) and v_measure(truth, labels) == pytest.approx(1.0)


def _unit(X):
    X = np.asarray(X, dtype=np.float32)
    return X / np.linalg.norm(X, axis=1, keepdims=True)


def test_analogy_excludes_query_words():
    # b is nearly a, so b - a + c is nearest to c itself; the answer must be the next word, d
    E = _unit([[1, 0, 0], [0.95, 0.05, 0], [0, 0, 1], [0.2, 0.4, 0.9], [-1, 0, 0]])
    a, b, c = [0], [1], [2]
    assert int(np.argmax((E[1] - E[0] + E[2]) @ E.T)) == 2
    assert analogy_3cosadd(E, a, b, c).tolist() == [3]
    assert analogy_3cosmul(E, a, b, c).tolist() == [3]


def test_analogy_matches_brute_force_in_chunks(monkeypatch):
    rng = np.random.default_rng(2)
    E = _unit(rng.normal(size=(40, 8)))
    a, b, c = (rng.integers(0, 40, 25) for _ in range(3))
    cos = E @ E.T
    add, mul = [], []
    for i, j, k in zip(a, b, c):
        s_add = cos[j] - cos[i] + cos[k]
        s_mul = ((cos[j] + 1) / 2) * ((cos[k] + 1) / 2) / ((cos[i] + 1) / 2 + 1e-3)
        for s, out in ((s_add, add), (s_mul, mul)):
            s[[i, j, k]] = -np.inf
            out.append(int(np.argmax(s)))
    monkeypatch.setattr(metrics, "_CHUNK_ELEMENTS", 3 * 40)  # 3 questions per chunk
    assert analogy_3cosadd(E, a, b, c).tolist() == add
    assert analogy_3cosmul(E, a, b, c).tolist() == mul


class StaticModel:
    """Word vectors where every analogy pair shares an offset (b = a + r); words ordered by 'frequency'."""

    def __init__(self, extra=()):
        rng = np.random.default_rng(3)
        base = {w: rng.normal(size=64) for w in ("man", "king", "paris", "rome")}
        g, cap = rng.normal(size=64), rng.normal(size=64)
        vec = {**base, "woman": base["man"] + g, "queen": base["king"] + g}
        vec.update(france=base["paris"] + cap, italy=base["rome"] + cap)
        self.words = ["man", "woman", "king", "queen", "paris", "france", "rome", "italy"]
        vectors = [vec[w] for w in self.words]
        for word, v in extra:
            self.words.append(word)
            vectors.append(v)
        self.vectors = np.asarray(vectors, dtype=np.float32)
        self.wv = self  # the eval suite reads a static model's wv.index_to_key and wv.vectors

    @property
    def index_to_key(self) -> list[str]:
        return self.words


QUESTIONS = """: family
man woman king queen
king queen man woman
man woman king unknownword
: capital
Paris France Rome Italy
rome italy paris france
"""


def _analogy_dir(tmp_path):
    (tmp_path / "google_analogy").mkdir()
    (tmp_path / "google_analogy" / "questions-words.txt").write_text(QUESTIONS)
    return tmp_path


def test_analogy_coverage_counts_oov(tmp_path):
    [r] = run_task("analogy", StaticModel(), data_dir=_analogy_dir(tmp_path), datasets=["google_analogy"])
    assert r.n == 5 and r.coverage == pytest.approx(4 / 5)  # unknownword is out of vocabulary
    assert r.metrics == {"3cosadd": 100.0, "3cosmul": 100.0}
    assert r.details["sections"]["family"] == {"n": 3, "answerable": 2, "3cosadd": 100.0, "3cosmul": 100.0}


def test_analogy_restrict_vocab(tmp_path):
    _analogy_dir(tmp_path)
    # rome and italy lie outside the first 6 words: the capital questions become unanswerable
    [r] = run_task("analogy", StaticModel(), data_dir=tmp_path, datasets=["google_analogy"], restrict_vocab=6)
    assert r.coverage == pytest.approx(2 / 5)
    assert r.details["sections"]["capital"]["answerable"] == 0
    # a rare word placed exactly at king - man + woman wins unless restrict_vocab keeps it out of the candidates
    m = StaticModel()
    E = _unit(m.vectors)
    decoy = StaticModel(extra=[("queenly", E[2] - E[0] + E[1])])
    [full] = run_task("analogy", decoy, data_dir=tmp_path, datasets=["google_analogy"])
    [restricted] = run_task("analogy", decoy, data_dir=tmp_path, datasets=["google_analogy"], restrict_vocab=8)
    assert full.details["sections"]["family"]["3cosadd"] == 50.0
    assert restricted.details["sections"]["family"]["3cosadd"] == 100.0


def test_wordsim_coverage_and_restrict_vocab(tmp_path):
    (tmp_path / "word_similarity_en").mkdir()
    rows = "# comment\nking\tqueen\t8\nman\twoman\t7\nking\tparis\t1\nMan\trome\t0.5\nfoo\tbar\t3\n"
    (tmp_path / "word_similarity_en" / "wordsim353.tsv").write_text(rows)
    [r] = run_task("wordsim", StaticModel(), data_dir=tmp_path, datasets=["wordsim353"])
    assert r.n == 5 and r.coverage == pytest.approx(4 / 5) and r.details["covered"] == 4
    assert math.isfinite(r.metrics["spearman"])
    [r] = run_task("wordsim", StaticModel(), data_dir=tmp_path, datasets=["wordsim353"], restrict_vocab=4)
    assert r.coverage == pytest.approx(2 / 5)
