"""End-to-end runs of every evaluation task on tiny files in each dataset's real format."""

import argparse
import csv
import importlib.machinery
import io
import json
import math
import sys
import types
import zlib
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

import edgeemb
from edgeemb.cli.evaluate import add_parsers
from edgeemb.eval import TASKS, DataNotFound, data, run_task, to_json, to_markdown
from edgeemb.eval.tasks import TaskResult

STS_EN = [
    ("A man, with a hat, plays.", "A man plays.", 4.5),
    ("A dog runs.", "A cat sleeps.", 0.5),
    ("Kids swim in a pool.", "Children swim in a pool.", 4.8),
    ("The stock fell.", "Rain is falling.", 0.0),
    ('She said "hi".', "She greeted him.", 3.0),
    ("Cars race fast.", "Cars are racing.", 4.0),
]
STS_ZH = [
    ("一个女孩在梳头。", "女孩在梳头。", 5),
    ("一群男人踢足球。", "天在下雨。", 0),
    ("他在吃饭。", "他在吃东西。", 4),
]
LCQMC = [
    ("英雄联盟什么英雄最好", "英雄联盟最好英雄是什么", 1),
    ("谁有狂三这张高清的", "这张高清图，谁有", 0),
] * 3
CORPUS = {
    "101": ("Vitamin D", "Vitamin D deficiency raises fracture risk."),
    "102": ("", "Aspirin lowers the risk of heart attack."),
    "103": ("Sleep", "Short sleep impairs memory consolidation."),
    "104": ("Noise", "Unrelated text about astronomy and stars."),
}
QUERIES = {
    "1": "Vitamin D protects bones.",
    "2": "Aspirin prevents heart attacks.",
    "3": "Sleep helps memory.",
    "9": "A query without qrels.",
}
QRELS = {"1": "101", "2": "102", "3": "103"}
ANALOGY = ": family\nman woman king queen\nking queen man woman\n: capital\nparis france rome italy\n"
CA8 = ": geography\r\n北京 京剧 广东 粤剧\r\n"
WORDSIM = (
    "# The WordSimilarity-353 Test Collection\n# Word 1\tWord 2\tHuman (mean)\nking\tqueen\t8\nman\twoman\t7\n"
    "king\tparis\t1\nrome\twoman\t0.5\n"
)
CLUSTER = {"digits": "0123456789", "letters": "abcdefghij", "han": "北京广东粤剧京剧天下雨"}


def _write(root: Path, rel: str, text: str) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode("utf-8"))


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """A data root holding tiny files in the real formats (quoting, comments, CRLF, headers)."""
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(STS_EN)  # RFC-4180 quoting of commas and quotes
    _write(tmp_path, "stsb_en/stsb-en-test.csv", buf.getvalue())
    _write(tmp_path, "stsb_zh_cnsd/STS-B.test.data", "".join(f"{a}\t{b}\t{s}\n" for a, b, s in STS_ZH))
    _write(tmp_path, "lcqmc/test.txt", "".join(f"{a}\t{b}\t{s}\n" for a, b, s in LCQMC))
    corpus = "".join(
        json.dumps({"_id": k, "title": t, "text": x, "metadata": {}}) + "\n" for k, (t, x) in CORPUS.items()
    )
    _write(tmp_path, "beir_scifact/corpus.jsonl", corpus)
    queries = "".join(json.dumps({"_id": k, "text": t, "metadata": {}}) + "\n" for k, t in QUERIES.items())
    _write(tmp_path, "beir_scifact/queries.jsonl", queries)
    qrels = "query-id\tcorpus-id\tscore\n" + "".join(f"{q}\t{d}\t1\n" for q, d in QRELS.items())
    _write(tmp_path, "beir_scifact/qrels/test.tsv", qrels)
    _write(tmp_path, "google_analogy/questions-words.txt", ANALOGY)
    _write(tmp_path, "ca8_zh_analogy/semantic.txt", CA8)
    _write(tmp_path, "ca8_zh_analogy/morphological.txt", ": A\r\n看 看一看 听 听一听\r\n")
    for name in ("word_similarity_en/wordsim353.tsv", "word_similarity_en/simlex999.txt"):
        _write(tmp_path, name, WORDSIM)
    _write(tmp_path, "word_similarity_zh/cwe_240.txt", "北京\t京剧\t6\n广东\t粤剧\t7\n天\t雨\t2\n")
    _write(
        tmp_path,
        "word_similarity_zh/cwe_297.txt",
        "北京\t京剧\t3\nOPEC\t石油\t2.67\n广东\t粤剧\t4\n天\t雨\t1\n",
    )
    rng = np.random.default_rng(0)
    sents = [
        (src, " ".join("".join(rng.choice(list(chars), 5)) for _ in range(4)))
        for src, chars in CLUSTER.items()
        for _ in range(12)
    ]
    _write(
        tmp_path,
        "en_corpus/en_sentences.tsv",
        "source\tsentence\n" + "".join(f"{s}\t{x}\n" for s, x in sents),
    )
    return tmp_path


class HashModel:
    """Bag of character unigrams and bigrams hashed into 256 dims; `wv` (index_to_key, vectors) makes it static."""

    def __init__(self, static: bool = True):
        self.calls = []
        if static:
            words = [
                "man",
                "woman",
                "king",
                "queen",
                "paris",
                "france",
                "rome",
                "italy",
                "北京",
                "京剧",
                "广东",
                "粤剧",
                "天",
                "雨",
            ]
            self.wv = SimpleNamespace(index_to_key=words, vectors=self.encode(words))

    def encode(self, texts, batch_size=32, show_progress=False):
        self.calls.append((len(texts), batch_size, show_progress))
        out = np.zeros((len(texts), 256), dtype=np.float32)
        for i, t in enumerate(texts):
            for g in [*t, *(t[j : j + 2] for j in range(len(t) - 1))]:
                out[i, zlib.crc32(g.encode()) % 256] += 1
        return out


class TableModel:
    """An oracle: each text maps to a fixed vector."""

    def __init__(self, table):
        self.table = table

    def encode(self, texts, batch_size=32, show_progress=False):
        return np.array([self.table[t] for t in texts], dtype=np.float32)


class BruteForceIndex:
    """The index_factory protocol: add(vectors, ids), search(vectors, k) -> (ids, scores)."""

    def __init__(self, dim):
        self.vectors, self.ids = np.zeros((0, dim), np.float32), np.zeros(0, np.int64)

    def add(self, vectors, ids):
        self.vectors, self.ids = np.vstack([self.vectors, vectors]), np.concatenate([self.ids, ids])

    def search(self, vectors, k):
        s = vectors @ self.vectors.T
        top = np.argsort(-s, axis=1)[:, :k]
        return self.ids[top], np.take_along_axis(s, top, 1)


def test_every_task_end_to_end(data_dir):
    model = HashModel()
    for name in TASKS:
        results = run_task(name, model, data_dir=data_dir)
        assert results and all(isinstance(r, TaskResult) and r.task == name for r in results)
        for r in results:
            assert r.n > 0 and r.seconds >= 0
            assert all(math.isfinite(v) and -100 <= v <= 100 for v in r.metrics.values()), (name, r.metrics)
    assert {r.dataset for r in run_task("sts", model, data_dir=data_dir)} == {"stsb_en", "stsb_zh_cnsd"}
    assert [r.n for r in run_task("wordsim", model, data_dir=data_dir)] == [4, 4, 3, 3]  # OPEC pair dropped
    [c] = run_task("cluster", model, data_dir=data_dir)
    assert (
        c.n == 36 and c.details["k"] == 3 and c.metrics["v_measure"] > 90
    )  # the sources use disjoint characters


def test_limit_and_progress_flag(data_dir):
    model = HashModel(static=False)
    [r_en, _] = run_task("sts", model, data_dir=data_dir, limit=2, batch_size=7, show_progress=True)
    assert r_en.n == 2 and model.calls[0] == (4, 7, True)
    [r] = run_task("retrieval", model, data_dir=data_dir, limit=1)
    assert r.n == 1 and r.details["corpus"] == 1


def _sts_oracle(pairs, scale):
    """Vectors whose pair cosine equals score / scale, so the ranking is perfect."""
    table = {}
    for a, b, s in pairs:
        theta = math.acos(s / scale)
        table[a] = [1.0, 0.0]
        table[b] = [math.cos(theta), math.sin(theta)]
    return TableModel(table)


def test_perfect_models_score_100(data_dir):
    [r] = run_task("sts", _sts_oracle(STS_EN, 5), data_dir=data_dir, langs=["en"])
    assert r.metrics["spearman"] == pytest.approx(100)
    [r] = run_task("pair", _sts_oracle(LCQMC, 1), data_dir=data_dir)
    assert (
        r.metrics["spearman"] == pytest.approx(100)
        and r.metrics["accuracy"] == 100
        and r.metrics["ap"] == 100
    )
    # each query shares a one-hot vector with its relevant document
    table = {QUERIES[q]: np.eye(5)[i] for i, q in enumerate(QRELS)}
    table.update({f"{t} {x}".strip(): np.eye(5)[i] for i, (t, x) in enumerate(CORPUS.values())})
    [r] = run_task("retrieval", TableModel(table), data_dir=data_dir, index_factory=BruteForceIndex)
    assert r.n == 3  # only queries with qrels
    assert r.metrics == pytest.approx(
        {m: 100.0 for m in ("ndcg@10", "recall@100", "mrr@10", "ann_ndcg@10", "ann_recall@100", "ann_mrr@10")}
    )


def test_word_task_needs_vocabulary(data_dir):
    with pytest.raises(ValueError, match="task analogy needs a static bundle with a vocabulary"):
        run_task("analogy", HashModel(static=False), data_dir=data_dir)
    with pytest.raises(ValueError, match="unknown task"):
        run_task("nope", HashModel())


def test_missing_folder_and_file(tmp_path, data_dir):
    with pytest.raises(DataNotFound, match=str(tmp_path / "nowhere" / "stsb_en")):
        data.load_sts("en", data_dir=tmp_path / "nowhere")
    (data_dir / "lcqmc" / "test.txt").unlink()
    with pytest.raises(FileNotFoundError, match=str(data_dir / "lcqmc" / "test.txt")):
        run_task("pair", HashModel(), data_dir=data_dir)


def test_data_root_resolution(tmp_path, monkeypatch):
    monkeypatch.delenv("EDGEEMB_DATA", raising=False)
    repo = Path(data.__file__).resolve().parents[2]
    assert data.data_root() == repo.parent / "shared" / "data"
    monkeypatch.setenv("EDGEEMB_DATA", str(tmp_path))
    assert data.data_root() == tmp_path
    assert data.data_root(tmp_path / "x") == tmp_path / "x"


def test_malformed_rows(data_dir):
    path = data_dir / "stsb_zh_cnsd" / "STS-B.test.data"
    good = "".join(f"句子{i}\t句子{i + 1}\t{i % 6}\n" for i in range(199))
    path.write_text(good + "坏行没有分数\n", encoding="utf-8")  # 1 of 200 rows: skipped with a warning
    with pytest.warns(UserWarning, match="skipped 1 malformed"):
        assert len(data.load_sts("zh", data_dir=data_dir)) == 199
    lines = good.splitlines(keepends=True)  # 3 of 202 rows bad (> 1%), the first on line 3
    path.write_text(
        "".join(lines[:2]) + "坏行\tx\tnot-a-number\n" + "".join(lines[2:]) + "坏\n坏\n", encoding="utf-8"
    )
    with pytest.raises(ValueError, match=r"STS-B\.test\.data:3: malformed"):
        data.load_sts("zh", data_dir=data_dir)


def test_undecodable_bytes(data_dir):
    (data_dir / "lcqmc" / "test.txt").write_bytes("好\t好\t1\n".encode() + b"\xff\xfe\t\xe5\t0\n")
    with pytest.raises(ValueError, match=r"test\.txt:2: undecodable bytes .* \(expected UTF-8\)"):
        data.load_lcqmc(data_dir=data_dir)


def test_report_json_and_markdown():
    a = [
        TaskResult("sts", "stsb_en", {"spearman": 80.0}, 10, None, 1.23456),
        TaskResult("analogy", "google_analogy", {"3cosadd": float("nan")}, 5, 0.5, 0.1),
    ]
    b = [TaskResult("sts", "stsb_en", {"spearman": 82.5}, 10, None, 2.0)]
    doc = to_json(a)
    assert json.loads(json.dumps(doc)) == doc
    assert list(doc["results"][0]) == ["task", "dataset", "metrics", "n", "coverage", "seconds"]
    assert doc["results"][1]["metrics"] == {"3cosadd": None} and doc["results"][1]["coverage"] == 0.5
    md = to_markdown({"small": a, "big": b})
    assert md.splitlines()[0] == "| task | dataset | metric | small | big | Δ big |"
    assert "| sts | stsb_en | spearman | 80.00 | 82.50 | +2.50 |" in md
    assert "| analogy | google_analogy | coverage % | 50.00 | – | – |" in md
    assert "Δ" not in to_markdown({"only": a})


def _cli(argv):
    parser = argparse.ArgumentParser(prog="edgeemb")
    add_parsers(parser.add_subparsers(dest="command"), None)
    args = parser.parse_args(argv)
    return args.func(args)


def test_cli_eval(data_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(
        edgeemb, "load", lambda path: HashModel(static=path.endswith("static")), raising=False
    )
    out_json, out_md = tmp_path / "r.json", tmp_path / "r.md"
    argv = [
        "eval",
        "b/static",
        "--compare",
        "b/sentence",
        "--data",
        str(data_dir),
        "--task",
        "sts",
        "--task",
        "wordsim",
        "--json",
        str(out_json),
        "--markdown",
        str(out_md),
        "--limit",
        "3",
    ]
    # the sentence bundle cannot run an explicitly requested word task
    assert _cli(argv) == 2 and "needs a static bundle" in capsys.readouterr().err
    assert _cli(argv[:6] + ["--task", "all", *argv[10:]]) == 0
    stdout = capsys.readouterr().out
    assert stdout == out_md.read_text(encoding="utf-8") and "| static | sentence | Δ sentence |" in stdout
    doc = json.loads(out_json.read_text(encoding="utf-8"))
    assert doc["bundle"] == "static" and {r["task"] for r in doc["results"]} == set(TASKS)
    assert {r["task"] for r in doc["compare"]["sentence"]["results"]} == {
        "sts",
        "pair",
        "retrieval",
        "cluster",
    }


def test_cli_missing_data(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(edgeemb, "load", lambda path: HashModel(), raising=False)
    assert _cli(["eval", "b", "--task", "pair", "--data", str(tmp_path)]) == 2
    assert (
        capsys.readouterr().err.splitlines()[-1] == f"edgeemb eval: dataset not found: {tmp_path / 'lcqmc'} "
        "(set EDGEEMB_DATA or pass --data)"
    )


def test_cli_reference_spec(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(edgeemb, "load", lambda path: HashModel(), raising=False)
    assert _cli(["eval", "b", "--reference", "hf:x", "--data", str(tmp_path)]) == 2
    assert "unknown --reference kind 'hf'" in capsys.readouterr().err
    assert _cli(["eval", "b", "--reference", "sentence-transformers", "--data", str(tmp_path)]) == 2
    assert "sentence-transformers:PATH" in capsys.readouterr().err


def test_cli_reference_model(data_dir, monkeypatch, capsys):
    calls = []

    class FakeSentenceTransformer:
        def __init__(self, path):
            self.hash = HashModel(static=False)

        def encode(self, texts, batch_size, convert_to_numpy, show_progress_bar):
            calls.append((batch_size, convert_to_numpy, show_progress_bar))
            return self.hash.encode(texts).astype(np.float64)

    module = types.ModuleType("sentence_transformers")
    module.__spec__ = importlib.machinery.ModuleSpec("sentence_transformers", None)
    module.SentenceTransformer = FakeSentenceTransformer
    monkeypatch.setitem(sys.modules, "sentence_transformers", module)
    monkeypatch.setattr(edgeemb, "load", lambda path: HashModel(static=False), raising=False)
    argv = ["eval", "b", "--reference", "sentence-transformers:models/mini", "--data", str(data_dir)]
    assert _cli([*argv, "--task", "sts"]) == 0
    assert "| b | st:mini | Δ st:mini |" in capsys.readouterr().out
    assert calls and all(c[1] is True for c in calls)


REAL = data.data_root()
real_data = pytest.mark.skipif(not REAL.is_dir(), reason=f"benchmark data not found at {REAL}")


@pytest.mark.slow
@real_data
def test_real_data_row_counts():
    assert len(data.load_sts("en")) == 1379 and len(data.load_sts("zh")) == 1361
    assert len(data.load_lcqmc()) == 12500
    sf = data.load_scifact()
    assert (len(sf.corpus), len(sf.queries), sum(map(len, sf.qrels.values()))) == (5183, 300, 339)
    assert len(data.load_analogy("google_analogy")) == 19544 and len(data.load_analogy("ca8")) == 17813
    assert [len(data.load_wordsim(n)) for n in data.WORDSIM_SETS] == [353, 999, 240, 296]
    texts, labels = data.load_cluster_set(200, seed=0)
    assert len(texts) == 1000 and data.load_cluster_set(200, seed=0) == (texts, labels)


@pytest.mark.slow
@real_data
def test_real_data_hash_model_sanity():
    [en, zh] = run_task("sts", HashModel(static=False))
    assert 20 < en.metrics["spearman"] < 100 and 10 < zh.metrics["spearman"] < 100


# ---- the user's own data (issue #17) ---------------------------------------------------------------------
def _cli_model(monkeypatch):
    monkeypatch.setattr(edgeemb, "load", lambda path: HashModel(static=path.endswith("static")), raising=False)


def test_a_data_root_with_only_some_sets_runs_those_and_notes_the_rest(tmp_path, monkeypatch, capsys):
    _cli_model(monkeypatch)
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(STS_EN)
    _write(tmp_path, "stsb_en/stsb-en-test.csv", buf.getvalue())
    assert _cli(["eval", "b/sentence", "--task", "sts", "--data", str(tmp_path)]) == 0
    out, err = capsys.readouterr()
    assert "| sts | stsb_en | spearman |" in out and "stsb_zh" not in out
    assert "skipped" in err and "stsb_zh_cnsd" in err
    assert _cli(["eval", "b/sentence", "--task", "pair", "--data", str(tmp_path)]) == 2  # asked for, absent
    assert "lcqmc" in capsys.readouterr().err


def test_user_sts_csv_with_header_and_any_scale_is_named_after_the_file(tmp_path, monkeypatch, capsys):
    _cli_model(monkeypatch)
    rows = [("sentence1", "sentence2", "score")] + [(a, b, s / 5) for a, b, s in STS_EN]  # 0..1 scale
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(rows)
    _write(tmp_path, "my_pairs.csv", buf.getvalue())
    assert _cli(["eval", "b/sentence", "--task", "sts", "--data", str(tmp_path / "my_pairs.csv")]) == 0
    out = capsys.readouterr().out
    assert "| sts | my_pairs | spearman |" in out
    [r] = run_task("sts", _sts_oracle([(a, b, s / 5) for a, b, s in STS_EN], 1),
                   data_path=tmp_path / "my_pairs.csv")
    assert r.n == len(STS_EN) and r.metrics["spearman"] == pytest.approx(100)


def test_user_pairs_flag_a_degenerate_accuracy(tmp_path):
    _write(tmp_path, "all_pos.tsv", "".join(f"{a}\t{b}\t1\n" for a, b, _ in LCQMC))
    [r] = run_task("pair", HashModel(static=False), data_path=tmp_path / "all_pos.tsv")
    assert r.dataset == "all_pos" and r.details["degenerate"] and r.metrics["accuracy"] == 100
    assert "accuracy (= majority class)" in to_markdown({"m": [r]})


def test_user_retrieval_word_and_cluster_formats(tmp_path, data_dir):
    beir = tmp_path / "mybeir"
    (beir / "qrels").mkdir(parents=True)
    for name in ("corpus.jsonl", "queries.jsonl", "qrels/test.tsv"):
        (beir / name).write_bytes((data_dir / "beir_scifact" / name).read_bytes())
    [r] = run_task("retrieval", HashModel(static=False), data_path=beir)
    assert r.dataset == "mybeir" and r.n == len(QRELS)
    _write(tmp_path, "sim.txt", "# word pairs\nman woman 7\nking queen 8\nparis rome 5\n")
    [w] = run_task("wordsim", HashModel(), data_path=tmp_path / "sim.txt")
    assert w.dataset == "sim" and w.n == 3
    _write(tmp_path, "ana.csv", "a,b,c,d\nman,woman,king,queen\nparis,france,rome,italy\n")
    [a] = run_task("analogy", HashModel(), data_path=tmp_path / "ana.csv")
    assert a.dataset == "ana" and a.n == 2
    _write(tmp_path, "cl.tsv", "text\tlabel\n" + "".join(f"{t}\t{s}\n" for s, t in
                                                           [("x", "aaa bbb"), ("x", "aab bba"), ("y", "xyz zyx"),
                                                            ("y", "xxy yzz")]))
    [c] = run_task("cluster", HashModel(static=False), data_path=tmp_path / "cl.tsv")
    assert c.dataset == "cl" and c.n == 4 and c.details["k"] == 2


def test_user_data_needs_one_task_and_a_known_format(tmp_path, monkeypatch, capsys):
    _cli_model(monkeypatch)
    _write(tmp_path, "x.csv", "a,b,1\n")
    assert _cli(["eval", "b/sentence", "--data", str(tmp_path / "x.csv")]) == 2
    assert "one --task" in capsys.readouterr().err
    with pytest.raises(ValueError, match="BEIR folder"):
        run_task("retrieval", HashModel(static=False), data_path=tmp_path / "x.csv")
