"""Exported bundles against sentence-transformers in torch on the mixed English/Chinese sample corpus."""
import pytest

import edgeemb

pytest.importorskip("torch", reason="parity needs the export extra")


@pytest.fixture(scope="module")
def reference(minilm_src):
    from edgeemb_export.common.parity import parity_sentences, reference_sentence_transformers

    texts = parity_sentences()
    assert len(texts) >= 200
    return texts, reference_sentence_transformers(minilm_src, texts)


def cosines(bundle, texts, ref):
    from edgeemb_export.common.parity import cosine_rows

    return cosine_rows(edgeemb.load(bundle, threads=2).encode(texts, batch_size=32), ref)


def test_fp32_export_matches_torch(minilm_src, reference, tmp_path):
    from edgeemb_export.sentence.export import export_sentence

    out = export_sentence(minilm_src, tmp_path / "fp32", "none")
    texts, ref = reference
    cos = cosines(out, texts, ref)
    assert cos.min() >= 0.9999
    parity = edgeemb.read_manifest(out).parity
    assert parity["n"] == len(texts) and parity["cosine_min"] >= 0.9999


def test_int8_default_bundle_matches_torch(default_bundle, reference):
    texts, ref = reference
    cos = cosines(default_bundle, texts, ref)
    assert cos.mean() >= 0.99 and cos.min() >= 0.95
    recorded = edgeemb.read_manifest(default_bundle).parity
    assert abs(recorded["cosine_mean"] - cos.mean()) < 2e-3


def test_sentence_exporter_refuses_a_non_sentence_folder(tmp_path):
    from edgeemb_export.common.errors import ExportError
    from edgeemb_export.sentence.export import export_sentence

    with pytest.raises(ExportError, match="modules.json is missing"):
        export_sentence(tmp_path, tmp_path / "out")
