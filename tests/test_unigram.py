"""edgeemb.encode.unigram: ids, type ids, tokens and overflow windows identical to tokenizers' on the real
multilingual bundle (when built) and on small tokenizer.json files built here (so CI without it tests the logic)."""
from __future__ import annotations

import copy
import csv
import json
import string
from pathlib import Path

import pytest
from edgeemb_export.sentence.multilingual_texts import LONG_PARAGRAPH, LONG_ZH, builtin_texts, mixed_texts
from edgeemb_export.sentence.unigram_tokenizer import tokenizer_from_map
from hypothesis import given, settings
from hypothesis import strategies as st
from test_e5s1 import NORM_MAP, tiny_vocab
from tokenizers import AddedToken, Regex, Tokenizer, models, normalizers, pre_tokenizers, processors

from edgeemb.encode.batching import TextTokenizer
from edgeemb.encode.unigram import UnigramTokenizer, load_unigram

SPECIALS = ["<s>", "</s>", "<pad>", "<unk>", "<mask>"]
CRAFTED = [
    "", " ", "   a  b ", "  ", "\t", "\n\n", "a", "▁", "▁▁a", " ▁ x",
    "I love this phone 😍📱 but 🔋 dies 😭", "👨‍👩‍👧 👍🏽", "\U0001F600" * 5,
    "\u0301", "e\u0301", " \u0301x", "\u0301\u0302\u0303",  # combining marks, alone and after a letter
    "\x00", "\x01a\x02b\x07", "a\x1bb\x7fc", "a\tb\nc\r\nd\x0be\x0cf", "\u200b\u200c\u200d\ufeff", "\u2028x\u2029",
    "<mask>", "a <mask> b", "a<mask>b", "<mask><mask>", " <mask> ", "<s>x</s>", "<s> x </s>", "a<unk>b", "<unk>",
    "<pad><pad>", "</s>", "<s", "s>", "<<s>>",
    "x" * 10_000, "ab" * 5_000, "中" * 3_000,  # 10,000-character (and long CJK) words
    "𓀀𓀁𓀂", "abc𓀀𓀁def", "ꙮꙮ", "\ue000\ue001", "x\U0010FFFDy", "⿰⿱", "ᚠᛇᚻ", "𐍈𐌰",  # unseen: fused unknowns
    "ＦＵＬＬＷＩＤＴＨ　ｔｅｘｔ", "ﬁ ﬂ Ⅻ ½ ℌ", "Straße İstanbul ǅ", "ﷺ", "각 각",
    LONG_PARAGRAPH * 8, LONG_ZH * 10, (LONG_PARAGRAPH + LONG_ZH) * 4,  # past 512 tokens: truncated, windows
]


def view(enc) -> tuple:
    """What an Encoding carries that edgeemb reads, overflow windows included."""
    return (list(enc.ids), list(enc.type_ids), list(enc.tokens),
            [(list(o.ids), list(o.type_ids), list(o.tokens), len(o.overflowing)) for o in enc.overflowing])


def assert_same(ref: Tokenizer, mine: UnigramTokenizer, texts: list[str], add_special_tokens: bool = True) -> None:
    """encode_batch of both gives the same ids, type ids, tokens and windows for every text."""
    want = ref.encode_batch(texts, add_special_tokens=add_special_tokens)
    got = mine.encode_batch(texts, add_special_tokens=add_special_tokens)
    assert len(got) == len(want)
    for text, g, w in zip(texts, got, want):
        assert view(g) == view(w), f"text {text[:60]!r} (len {len(text)})"


def pair(path: Path, max_length: int | None = 512) -> tuple[Tokenizer, UnigramTokenizer]:
    """tokenizers' Tokenizer and ours from one file, set up as TextTokenizer sets them."""
    ref = Tokenizer.from_file(str(path))
    mine = load_unigram(path)
    assert isinstance(mine, UnigramTokenizer)
    for t in (ref, mine):
        t.no_padding()
        if max_length is None:
            t.no_truncation()
        else:
            t.enable_truncation(max_length)
    return ref, mine


# -- small tokenizers built here ----------------------------------------------------------------------------
def e5_like(tmp: Path) -> Path:
    """The export's XLM-R-style tokenizer (Precompiled normaliser from a map, collapsed spaces, Metaspace,
    <s> $A </s>) over the E5S1 tests' tiny vocabulary."""
    v = tiny_vocab()
    tok = tokenizer_from_map(v.pieces, v.scores, v.unk, v.bos, v.eos, NORM_MAP)
    path = tmp / "e5_like.json"
    tok.save(str(path))
    return path


def with_added(tmp: Path) -> Path:
    """e5_like plus added tokens with every flag: XLM-R's specials (<mask> lstrip), a non-special rstrip token,
    a single_word one, a normalized one that only the normalised text shows, one not in the vocabulary."""
    tok = Tokenizer.from_file(str(e5_like(tmp)))
    tok.add_special_tokens([AddedToken("<s>", normalized=False), AddedToken("<pad>", normalized=False),
                            AddedToken("</s>", normalized=False), AddedToken("<unk>", normalized=False),
                            AddedToken("<mask>", lstrip=True, normalized=False)])
    tok.add_tokens([AddedToken("[DAY]", rstrip=True, normalized=False), AddedToken("ony", single_word=True),
                    AddedToken("Aa", normalized=True), AddedToken("hello world", normalized=True)])
    path = tmp / "with_added.json"
    tok.save(str(path))
    return path


def ties(tmp: Path, dup: bool = False) -> Path:
    """Many equal scores (tie-breaking), pieces longer than one character without their characters (a
    position with no single-character piece), optionally duplicate pieces; NFKC, Metaspace prepend 'first',
    a template with type ids 2 / 1 / 0."""
    pieces = ["<unk>", "▁", "a", "b", "ab", "ba", "aba", "▁a", "▁ab", "cd", "cde", "e", "<s>", "</s>", "xy"]
    vocab = [(p, -1.0 if i else 0.0) for i, p in enumerate(pieces)] + [("c", -20.0)]
    # "qzz": qz + z (-30.5) beats unk(q) + zz (-20 - 10 - 1) by 0.5 only when the unknown's penalty is 10
    vocab += [("z", -15.5), ("zz", -1.0), ("qz", -15.0)]
    if dup:
        vocab += [("ab", -0.5), ("a", -9.0)]
    tok = Tokenizer(models.Unigram(vocab, unk_id=0, byte_fallback=False))
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Replace(Regex(" {2,}"), " ")])
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=True)
    tok.post_processor = processors.TemplateProcessing(single="<s>:2 $A:1 </s>:0", special_tokens=[("<s>", 12),
                                                                                                 ("</s>", 13)])
    path = tmp / f"ties{int(dup)}.json"
    tok.save(str(path))
    return path


def unk_is_a_piece(tmp: Path) -> Path:
    """unk_id on a scored piece ("a", +12): unknown q then a fuse into "qa", which is itself a piece, so the
    fused run gets the id of "qa" (tokenizers looks a fused run up before falling back to unk)."""
    vocab = [("<unk>", 0.0), ("a", 12.0), ("qa", -1.0), ("▁", -1.0), ("b", -2.0)]
    tok = Tokenizer(models.Unigram(vocab, unk_id=1, byte_fallback=False))
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    path = tmp / "unk_is_a_piece.json"
    tok.save(str(path))
    return path


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("unigram")
    return {"e5_like": e5_like(tmp), "with_added": with_added(tmp), "ties": ties(tmp), "dup": ties(tmp, True),
            "unk_is_a_piece": unk_is_a_piece(tmp)}


def real_path() -> Path:
    """The multilingual bundle's tokenizer.json (250k XLM-R pieces), or skip."""
    from edgeemb.paths import default_bundle_path

    path = default_bundle_path("default-multilingual") / "tokenizer.json"
    if not path.is_file():
        pytest.skip(f"multilingual bundle not built at {path.parent}: run `bash scripts/setup.sh --dev`")
    return path


@pytest.fixture(scope="module")
def real() -> tuple[Tokenizer, UnigramTokenizer]:
    return pair(real_path())


def shared_test_sentences(data: Path) -> list[str]:
    """STS-B en and CNSD test sentences (both columns)."""
    out: list[str] = []
    en, zh = data / "stsb_en" / "stsb-en-test.csv", data / "stsb_zh_cnsd" / "STS-B.test.data"
    if not en.is_file() or not zh.is_file():
        pytest.skip(f"STS-B test sets not found under {data}")
    with open(en, encoding="utf-8") as f:
        out += [c for row in csv.reader(f) for c in row[:2]]
    with open(zh, encoding="utf-8") as f:
        out += [c for row in csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE) for c in row[:2]]
    return out


# -- the real bundle ----------------------------------------------------------------------------------------
def test_real_crafted_and_builtin(real):
    ref, mine = real
    assert_same(ref, mine, CRAFTED + builtin_texts())
    assert mine.get_vocab_size() == ref.get_vocab_size()
    assert mine.get_vocab_size(with_added_tokens=False) == ref.get_vocab_size(with_added_tokens=False)
    for i in (0, 1, 2, 3, 6, 250_001, ref.get_vocab_size() - 1, ref.get_vocab_size(), 10**7):
        assert mine.id_to_token(i) == ref.id_to_token(i)


def test_real_mixed_and_sts_test_sentences(real, shared_data):
    ref, mine = real
    assert_same(ref, mine, mixed_texts(shared_data) + shared_test_sentences(shared_data))


def test_real_truncation_windows_short_max_length(real):
    """Many windows: max_length 16 (14 content tokens each), and without specials."""
    ref, mine = real
    try:
        for t in (ref, mine):
            t.enable_truncation(16)
        assert_same(ref, mine, CRAFTED + builtin_texts())
        assert_same(ref, mine, CRAFTED[:30] + builtin_texts()[-5:], add_special_tokens=False)
    finally:
        for t in (ref, mine):
            t.enable_truncation(512)


def test_real_as_text_tokenizer(real):
    """The hook the lead wires in: TextTokenizer holding ours gives the same tokenize / tokenize_windows."""
    _, mine = real
    texts = CRAFTED + builtin_texts()
    theirs = TextTokenizer(real_path(), 512, pad_id=1)
    ours = copy.copy(theirs)
    ours.tokenizer = mine
    try:
        for max_length in (512, 24):
            for t in (theirs, ours):
                t.max_length = max_length
                t.tokenizer.enable_truncation(max_length)
            a, b = theirs.tokenize(texts), ours.tokenize(texts)
            assert (a.ids, a.type_ids, a.truncated) == (b.ids, b.type_ids, b.truncated)
            (wa, oa), (wb, ob) = theirs.tokenize_windows(texts), ours.tokenize_windows(texts)
            assert (wa.ids, wa.type_ids, wa.truncated, oa.tolist()) == (wb.ids, wb.type_ids, wb.truncated,
                                                                        ob.tolist())
            assert theirs.tokenizer.encode(texts[10]).tokens == ours.tokenizer.encode(texts[10]).tokens
    finally:
        mine.enable_truncation(512)


def test_real_with_xlmr_added_tokens(tmp_path):
    """The same vocabulary with XLM-R's added specials (<mask> lstrip): matched in the raw text as tokenizers."""
    src = real_path()
    added = [{"id": i, "content": s, "single_word": False, "lstrip": s == "<mask>", "rstrip": False,
              "normalized": False, "special": True} for i, s in zip((0, 2, 1, 3, 250_001), SPECIALS)]
    data = src.read_bytes()
    assert data.count(b'"added_tokens": [],') == 1
    path = tmp_path / "xlmr.json"
    path.write_bytes(data.replace(b'"added_tokens": [],', b'"added_tokens": ' + json.dumps(added).encode() + b","))
    ref, mine = pair(path)
    assert_same(ref, mine, CRAFTED + ["Paris is the <mask> of France.", "</s></s> a", "x <mask>", "<s><s>"])
    assert [mine.token_to_id(s) for s in SPECIALS] == [ref.token_to_id(s) for s in SPECIALS]


# -- small tokenizers ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["e5_like", "with_added", "ties", "dup", "unk_is_a_piece"])
def test_small_crafted(small, name):
    ref, mine = pair(small[name])
    assert_same(ref, mine, CRAFTED + builtin_texts() + ["qzz", "qa", "qab qqa aqa", "aba", "ab abab cdecd"])
    assert_same(ref, mine, CRAFTED, add_special_tokens=False)
    assert mine.get_vocab_size() == ref.get_vocab_size()
    assert mine.get_vocab_size(False) == ref.get_vocab_size(False)
    assert mine.get_vocab() == ref.get_vocab()
    for i in range(ref.get_vocab_size() + 3):
        assert mine.id_to_token(i) == ref.id_to_token(i)
    for s in SPECIALS + ["[DAY]", "Aa", "ab", "zz"]:
        assert mine.token_to_id(s) == ref.token_to_id(s)


def test_added_tokens_flags(small):
    """lstrip / rstrip / single_word / normalized added tokens, in every position."""
    ref, mine = pair(small["with_added"])
    texts = ["a <mask> b", "a   <mask>   b", "<mask>", "x<mask>", "[DAY]  monday", "a [DAY]b", "Anthony ony",
             "ony", "ony!", "tony", "say Aa", "ＡＡ ａａ Ａａ", "hello world", "hello  world", "hello\tworld",
             "ｈｅｌｌｏ world", "<s>hello world</s>", "<unk><pad>", "</s> </s>", "\x01<mask>\x01", "[DAY][DAY]"]
    assert_same(ref, mine, texts)
    assert_same(ref, mine, texts, add_special_tokens=False)


@pytest.mark.parametrize("max_length,stride,direction", [(5, 0, "right"), (7, 2, "right"), (6, 1, "left"),
                                                         (3, 0, "left"), (2, 0, "right"), (1, 0, "right"),
                                                         (40, 0, "right")])
def test_truncation_parameters(small, max_length, stride, direction):
    for name in ("e5_like", "ties"):
        ref, mine = pair(small[name])
        for t in (ref, mine):
            t.enable_truncation(max_length, stride=stride, direction=direction)
        assert_same(ref, mine, CRAFTED)
        assert_same(ref, mine, CRAFTED[:25], add_special_tokens=False)


def test_truncation_from_the_file_and_none(small, tmp_path):
    data = json.loads(small["e5_like"].read_text(encoding="utf-8"))
    data["truncation"] = {"direction": "Left", "max_length": 9, "strategy": "LongestFirst", "stride": 2}
    path = tmp_path / "trunc.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    ref, mine = Tokenizer.from_file(str(path)), load_unigram(path)
    assert_same(ref, mine, CRAFTED)
    ref, mine = pair(small["e5_like"], max_length=None)
    assert_same(ref, mine, CRAFTED)


def test_no_post_processor(small, tmp_path):
    data = json.loads(small["ties"].read_text(encoding="utf-8"))
    data["post_processor"] = None
    path = tmp_path / "nopost.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    ref, mine = pair(path, max_length=4)
    assert_same(ref, mine, CRAFTED)


# -- reading the file ---------------------------------------------------------------------------------------
ODD_PIECES = ['"', '\\', 'a"b', 'c\\d', '\t', '\x01', '\u2028', '😀', '\U0010FFFD', '/', '\\"', '"vocab": [', ']']


def test_parse_compact_pretty_and_escaped_pieces(tmp_path):
    """Compact and pretty JSON, pieces with quotes, backslashes, control characters, non-BMP characters,
    scores in exponent form: pieces, ids and scores as tokenizers reads them."""
    vocab = [("<unk>", 0.0)] + [(p, -1.5 - i * 1e-7) for i, p in enumerate(ODD_PIECES)] + [("▁", -2e-05), ("x", -3)]
    tok = Tokenizer(models.Unigram(vocab, unk_id=0, byte_fallback=False))
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    for pretty in (True, False):
        path = tmp_path / f"odd{int(pretty)}.json"
        tok.save(str(path), pretty=pretty)
        mine = load_unigram(path)
        assert mine is not None
        assert [mine.id_to_token(i) for i in range(len(vocab))] == [p for p, _ in vocab]
        assert mine.scores.tolist() == [float(s) for _, s in vocab]
        ref = Tokenizer.from_file(str(path))
        assert_same(ref, mine, ODD_PIECES + ['x"a\\b😀\t\x01 /]', " ".join(ODD_PIECES)])


def test_not_unigram_or_not_reproduced_gives_none(tmp_path, small):
    wl = Tokenizer(models.WordLevel({"a": 0, "[UNK]": 1}, unk_token="[UNK]"))
    wl.save(str(tmp_path / "wl.json"))
    assert load_unigram(tmp_path / "wl.json") is None
    bpe = Tokenizer(models.BPE({"a": 0, "b": 1, "ab": 2}, [("a", "b")]))
    bpe.save(str(tmp_path / "bpe.json"))
    assert load_unigram(tmp_path / "bpe.json") is None
    data = json.loads(small["e5_like"].read_text(encoding="utf-8"))
    path = tmp_path / "odd.json"
    for change in ({"byte_fallback": True}, {"unk_id": None}):
        odd = json.loads(json.dumps(data))
        odd["model"].update(change)
        path.write_text(json.dumps(odd), encoding="utf-8")
        assert load_unigram(path) is None
    odd = json.loads(json.dumps(data))
    odd["post_processor"] = {"type": "BertProcessing", "sep": ["</s>", 2], "cls": ["<s>", 0]}
    path.write_text(json.dumps(odd), encoding="utf-8")
    assert load_unigram(path) is None
    (tmp_path / "broken.json").write_bytes(small["e5_like"].read_bytes()[:-50])
    assert load_unigram(tmp_path / "broken.json") is None


# -- random text --------------------------------------------------------------------------------------------
CJK = "".join(chr(c) for c in range(0x4E00, 0x4E00 + 300, 3)) + "的是了我不人在他有这个上们来到时大地为子中你说生国年着"
ALPHABET = string.ascii_letters + string.digits + string.punctuation + "  \t\n▁" + CJK + "éü\u0301😀ＡＢａ\x01\u200b𓀀"
PIECE = st.one_of(st.sampled_from(SPECIALS + ["[DAY]", "ony", "Aa", "hello world", " ", "  "]),
                  st.text(alphabet=ALPHABET, max_size=12), st.text(alphabet="ab ▁cdexyqz", max_size=8))
TEXTS = st.lists(st.lists(PIECE, max_size=12).map("".join), min_size=1, max_size=8)


@pytest.fixture(scope="module")
def small_pairs(small) -> list[tuple[Tokenizer, UnigramTokenizer]]:
    return [pair(small[name], max_length=12) for name in ("with_added", "ties", "dup", "unk_is_a_piece")]


@settings(max_examples=150, deadline=None)
@given(texts=TEXTS)
def test_random_texts_small(small_pairs, texts):
    for ref, mine in small_pairs:
        assert_same(ref, mine, texts)


@settings(max_examples=150, deadline=None)
@given(texts=TEXTS)
def test_random_texts_real(real, texts):
    ref, mine = real
    assert_same(ref, mine, texts)


def test_text_tokenizer_holds_the_compact_one_and_static_bundles_keep_tokenizers(small, tmp_path):
    """Transformer bundles with a Unigram tokenizer.json get UnigramTokenizer (same ids as tokenizers, a
    fraction of the memory); a WordPiece file and StaticTokenizer (whose speed is tokenising) keep tokenizers."""
    from edgeemb.encode.batching import TextTokenizer
    from edgeemb.static.tokenizer import StaticTokenizer

    path = small["e5_like"]
    tok = TextTokenizer(path, 16)
    assert isinstance(tok.tokenizer, UnigramTokenizer)
    ref = TextTokenizer.__new__(TextTokenizer)
    ref.compact_unigram = False
    ref.__init__(path, 16)
    assert isinstance(ref.tokenizer, Tokenizer)
    texts = ["a short text", "x" * 300, "", "ünïcode 汉字 text"]
    got, want = tok.tokenize(texts), ref.tokenize(texts)
    assert (got.ids, got.type_ids, got.truncated) == (want.ids, want.type_ids, want.truncated)
    assert StaticTokenizer.compact_unigram is False
