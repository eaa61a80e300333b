"""stories260K (real trained Llama weights) from llama2.c and GGUF: one model, one tokenizer, same bundles.

The llama2.c checkpoint is also read and run here by an independent numpy forward pass (run.c's maths:
interleaved RoPE from the stored freq_cis tables, grouped-query attention, SwiGLU) to check greedy generation.
"""
import os
import struct
import warnings
from pathlib import Path

import numpy as np
import pytest

import edgeemb

torch = pytest.importorskip("torch", reason="LLM export needs the export extra")

from torch_helpers import one_torch_thread  # noqa: F401

REPO = Path(__file__).resolve().parent.parent
STORIES = Path(os.environ.get("EDGEEMB_MODELS", REPO.parent / "shared" / "models")) / "stories260K"
TEXTS = ["Once upon a time", "Lily saw a big dog in the park.", "The sun was hot. Tom wanted ice cream!", "x",
         "她很开心", "Once upon a time there was a little girl who loved to play outside with her friends."]


@pytest.fixture(scope="module")
def stories() -> Path:
    if not (STORIES / "stories260K.bin").is_file() or not (STORIES / "stories260K.gguf").is_file():
        pytest.skip(f"stories260K not found at {STORIES}")
    return STORIES


@pytest.fixture(scope="module")
def converted(stories):
    from edgeemb_export.llm.gguf import load_gguf
    from edgeemb_export.llm.llama2c import load_llama2c

    return load_llama2c(stories / "stories260K.bin"), load_gguf(stories / "stories260K.gguf")


# ---- an independent llama2.c reader and forward pass (numpy) ----

def read_checkpoint(path):
    dim, hidden, n_layers, n_heads, n_kv, vocab, seq = np.fromfile(path, dtype="<i4", count=7).tolist()
    data = np.fromfile(path, dtype="<f4", offset=28)
    head = dim // n_heads
    kv = n_kv * head
    sizes = [("emb", (abs(vocab), dim)), ("rms_att", (n_layers, dim)), ("wq", (n_layers, dim, dim)),
             ("wk", (n_layers, kv, dim)), ("wv", (n_layers, kv, dim)), ("wo", (n_layers, dim, dim)),
             ("rms_ffn", (n_layers, dim)), ("w1", (n_layers, hidden, dim)), ("w2", (n_layers, dim, hidden)),
             ("w3", (n_layers, hidden, dim)), ("rms_final", (dim,)), ("cos", (seq, head // 2)),
             ("sin", (seq, head // 2))]
    w, off = {}, 0
    for name, shape in sizes:
        n = int(np.prod(shape))
        w[name] = data[off:off + n].reshape(shape)
        off += n
    w["cls"] = w["emb"] if vocab > 0 else data[off:].reshape(abs(vocab), dim)
    return {"dim": dim, "n_layers": n_layers, "n_heads": n_heads, "n_kv": n_kv, "head": head}, w


def rmsnorm(x, weight):
    return x / np.sqrt((x * x).mean() + 1e-5) * weight


def rope(x, pos, cos, sin, head):
    pairs = x.reshape(-1, head // 2, 2)  # (heads, head/2, 2): llama2.c rotates adjacent pairs
    a, b = pairs[..., 0], pairs[..., 1]
    c, s = cos[pos], sin[pos]
    return np.stack([a * c - b * s, a * s + b * c], -1).reshape(x.shape)


def numpy_generate(path, prompt_ids, steps):
    p, w = read_checkpoint(path)
    head, group = p["head"], p["n_heads"] // p["n_kv"]
    keys = [[] for _ in range(p["n_layers"])]
    values = [[] for _ in range(p["n_layers"])]
    tokens = list(prompt_ids)
    for pos in range(len(prompt_ids) + steps - 1):
        x = w["emb"][tokens[pos]].astype(np.float64)
        for i in range(p["n_layers"]):
            xb = rmsnorm(x, w["rms_att"][i])
            q = rope(w["wq"][i] @ xb, pos, w["cos"], w["sin"], head).reshape(p["n_heads"], head)
            keys[i].append(rope(w["wk"][i] @ xb, pos, w["cos"], w["sin"], head).reshape(p["n_kv"], head))
            values[i].append((w["wv"][i] @ xb).reshape(p["n_kv"], head))
            K, V = np.stack(keys[i]), np.stack(values[i])  # (pos+1, kv heads, head)
            out = np.empty_like(q)
            for h in range(p["n_heads"]):
                scores = K[:, h // group] @ q[h] / np.sqrt(head)
                att = np.exp(scores - scores.max())
                out[h] = (att / att.sum()) @ V[:, h // group]
            x = x + w["wo"][i] @ out.reshape(-1)
            xb = rmsnorm(x, w["rms_ffn"][i])
            h1, h3 = w["w1"][i] @ xb, w["w3"][i] @ xb
            x = x + w["w2"][i] @ (h1 / (1 + np.exp(-h1)) * h3)
        if pos >= len(prompt_ids) - 1:
            logits = w["cls"] @ rmsnorm(x, w["rms_final"])
            tokens.append(int(np.argmax(logits)))
    return tokens


def llama2c_encode(tok_path, text, vocab_size=512):
    """run.c's encode(): BOS, dummy-prefix space, characters (byte fallback), then best-score pair merges."""
    raw = Path(tok_path).read_bytes()
    pieces, scores, off = [], [], 4
    for _ in range(vocab_size):
        score, n = struct.unpack_from("<fi", raw, off)
        pieces.append(raw[off + 8:off + 8 + n].decode("utf-8"))
        scores.append(score)
        off += 8 + n
    lookup = {p: i for i, p in enumerate(pieces)}
    ids = [1, lookup[" "]]
    for ch in text:
        ids += [lookup[ch]] if ch in lookup else [b + 3 for b in ch.encode("utf-8")]
    while True:
        best = max(((scores[lookup[m]], i) for i in range(len(ids) - 1)
                    if (m := pieces[ids[i]] + pieces[ids[i + 1]]) in lookup), default=None,
                   key=lambda t: (t[0], -t[1]))
        if best is None:
            return ids
        i = best[1]
        ids[i:i + 2] = [lookup[pieces[ids[i]] + pieces[ids[i + 1]]]]


# ---- the checks ----

def test_bin_and_gguf_convert_to_the_same_model_and_tokenizer(converted):
    (m1, t1, s1), (m2, t2, s2) = converted
    a, b = m1.state_dict(), m2.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    for key in ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                "num_key_value_heads", "vocab_size", "rms_norm_eps", "rope_theta", "tie_word_embeddings"):
        assert getattr(m1.config, key) == getattr(m2.config, key), key
    assert s1 == s2
    for text in TEXTS + ["", "  two  spaces", "ñ é 中文 🙂"]:
        assert t1.encode(text).ids == t2.encode(text).ids, text


def test_tokenizer_matches_llama2c_encode(stories, converted):
    (_, tok, _), _ = converted
    for text in TEXTS + ["  two  spaces", "ñ é 🙂"]:
        assert tok.encode(text).ids == llama2c_encode(stories / "tok512.bin", text), text


def test_greedy_generation_matches_numpy_llama2c(stories, converted):
    (model, tok, _), _ = converted
    prompt = tok.encode("Once upon a time").ids
    steps = 24
    ids = torch.tensor([prompt])
    with torch.no_grad():
        for _ in range(steps):
            nxt = model(input_ids=ids).logits[0, -1].argmax()
            ids = torch.cat([ids, nxt.view(1, 1)], 1)
    expected = numpy_generate(stories / "stories260K.bin", prompt, steps)
    assert ids[0].tolist() == expected
    assert tok.decode(expected).startswith("Once upon a time")


def test_bin_and_gguf_bundles_give_the_same_embeddings(stories, tmp_path):
    from edgeemb_export.llm.export import export_llm
    from edgeemb_export.llm.options import LLMOptions

    opts = LLMOptions(quantization="none", pooling="last")
    a = export_llm(stories / "stories260K.bin", tmp_path / "bin", opts, parity_texts=TEXTS)
    b = export_llm(stories / "stories260K.gguf", tmp_path / "gguf", opts, parity_texts=TEXTS)
    ma, mb = edgeemb.read_manifest(a), edgeemb.read_manifest(b)
    assert (ma.source["format"], mb.source["format"]) == ("llama2.c", "gguf")
    assert ma.parity["cosine_min"] >= 0.9999 and mb.parity["cosine_min"] >= 0.9999
    assert ma.tokenizer["pad_source"] == "eos"  # llama2.c has no pad token: EOS chosen and recorded
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", edgeemb.TruncationWarning)
        xa = edgeemb.load(a, threads=1).encode(TEXTS, batch_size=3)
        xb = edgeemb.load(b, threads=1).encode(TEXTS, batch_size=3)
    assert (xa * xb).sum(1).min() >= 0.9999


def test_gguf_int4_export_through_the_cli(stories, tmp_path):
    from edgeemb.cli import main

    out = tmp_path / "int4"
    assert main(["export", "llm", str(stories / "stories260K.gguf"), "-o", str(out), "--quantize", "int4",
                 "--pooling", "mean"]) == 0
    m = edgeemb.read_manifest(out)
    assert m.quantization == "int4" and m.options["int4"]["block_size"] == 32
    assert m.parity["cosine_mean"] >= 0.95  # recorded against torch fp32 at export


def test_unsupported_gguf_type_is_named(tmp_path):
    """A GGUF written here byte by byte, with a Q4_K token table."""
    from edgeemb_export.common.errors import ExportError
    from edgeemb_export.common.gguf import read_gguf
    from edgeemb_export.llm.gguf import load_gguf

    def gstr(s):
        return struct.pack("<Q", len(s)) + s.encode()

    meta = [("general.architecture", 8, gstr("llama")), ("llama.embedding_length", 4, struct.pack("<I", 4))]
    body = b"GGUF" + struct.pack("<IQQ", 3, 1, len(meta))
    for key, vtype, value in meta:
        body += gstr(key) + struct.pack("<I", vtype) + value
    body += gstr("token_embd.weight") + struct.pack("<IQQIQ", 2, 256, 8, 12, 0)  # 2 dims, type 12 = Q4_K
    body += b"\0" * (-len(body) % 32) + b"\0" * 4096
    path = tmp_path / "q.gguf"
    path.write_bytes(body)
    g = read_gguf(path)
    assert g.tensors["token_embd.weight"].shape == (8, 256)
    with pytest.raises(ExportError, match="token_embd.weight.*GGUF type Q4_K.*handled: F32, F16, BF16"):
        load_gguf(path)


def test_truncated_gguf_and_versioned_llama2c_are_refused(stories, tmp_path):
    from edgeemb_export.common.errors import ExportError
    from edgeemb_export.common.gguf import read_gguf
    from edgeemb_export.llm.llama2c import read_llama2c

    cut = tmp_path / "cut.gguf"
    cut.write_bytes((stories / "stories260K.gguf").read_bytes()[:3000])
    with pytest.raises(ExportError, match="corrupt or truncated GGUF header"):
        read_gguf(cut)
    v2 = tmp_path / "v2.bin"
    v2.write_bytes(struct.pack("<Ii", 0x616B3432, 2) + b"\0" * 256)
    with pytest.raises(ExportError, match="versioned llama2.c export"):
        read_llama2c(v2)


def test_llama2c_unshared_classifier_and_header_checks(tmp_path):
    """A tiny checkpoint written here: negative vocab_size means its own classifier, kept untied."""
    from edgeemb_export.common.errors import ExportError
    from edgeemb_export.llm.llama2c import build_llama, read_llama2c

    dim, hidden, layers, heads, kv, vocab, seq = 8, 16, 1, 2, 1, 10, 4
    head = dim // heads
    n = (vocab * dim + layers * (2 * dim + dim * dim * 2 + 2 * kv * head * dim + 3 * hidden * dim)
         + dim + seq * head + vocab * dim)
    rng = np.random.default_rng(0)
    path = tmp_path / "tiny.bin"
    path.write_bytes(struct.pack("<7i", dim, hidden, layers, heads, kv, -vocab, seq)
                     + rng.standard_normal(n).astype("<f4").tobytes())
    params, weights = read_llama2c(path)
    assert params["vocab_size"] == vocab and not np.array_equal(weights["output"], weights["tok_embeddings"])
    model = build_llama(params, weights)
    assert model.config.tie_word_embeddings is False
    assert torch.equal(model.lm_head.weight, torch.from_numpy(weights["output"]))
    path.write_bytes(path.read_bytes()[:-4])
    with pytest.raises(ExportError, match="the header implies"):
        read_llama2c(path)
