"""A compact Unigram (SentencePiece) tokenizer: tokenizers' ids from a dict and a score array (issue #13).

tokenizers' Unigram keeps its vocabulary in a byte trie of ~1.1 KB a piece (289 MB for XLM-R's 250k pieces);
this module keeps a dict piece -> id and an array of scores and runs the same Viterbi search in Python.
Normalisation, pre-tokenisation and added tokens stay with tokenizers, in a Tokenizer built from the same JSON
with a one-piece vocabulary: its normalize_str / pre_tokenize_str give the words of a text, and a text that
holds an added token's content goes through its encode (which splits added tokens with all their flags, then
returns each word as one fused unknown). Only the model (segmentation), the template post-processing and
truncation are done here, each following tokenizers' Rust source (models/unigram/model.rs `encode_optimized`
and `tokenize`, processors/template.rs, tokenizer/encoding.rs `truncate`, utils/truncation.rs).
Over 400 lines because it is one port: loading, segmentation, post-processing and truncation sit side by side so
each can be read against its Rust counterpart.
"""
from __future__ import annotations

import json
import re
from array import array
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
from tokenizers import Tokenizer

K_UNK_PENALTY = 10.0  # tokenizers' kUnkPenalty: an unknown character scores this far below the lowest piece
CACHE_CAPACITY = 10_000  # words remembered; like tokenizers' Cache, it stops adding when full
CACHE_MAX_CHARS = 256  # longer words are not cached (tokenizers: 256 bytes)
MAX_ABS_SCORE = 1e300  # larger scores could overflow a path's sum to -inf: such a file goes to tokenizers
_NEG_INF = float("-inf")

_VOCAB_KEY = re.compile(rb'"vocab"\s*:\s*\[')
_NUMBER = rb"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?"
_ENTRY = re.compile(rb'\s*\[\s*"([^"\\]*(?:\\.[^"\\]*)*)"\s*,\s*(' + _NUMBER + rb")\s*\]\s*([,\]])")
_EMPTY = re.compile(rb"\s*\]")


class UnigramEncoding:
    """One text's tokens: the part of tokenizers' Encoding that edgeemb reads."""

    __slots__ = ("ids", "overflowing", "tokens", "type_ids")

    def __init__(self, ids: list[int], type_ids: list[int], tokens: list[str],
                 overflowing: list[UnigramEncoding] | None = None):
        self.ids, self.type_ids, self.tokens = ids, type_ids, tokens
        self.overflowing: list[UnigramEncoding] = overflowing if overflowing is not None else []

    def __len__(self) -> int:
        """Number of tokens, as Encoding's len()."""
        return len(self.ids)

    @property
    def attention_mask(self) -> list[int]:
        """All ones: no padding is ever added."""
        return [1] * len(self.ids)

    def __repr__(self) -> str:
        return f"UnigramEncoding(num_tokens={len(self.ids)}, overflowing={len(self.overflowing)})"


class _Template:
    """TemplateProcessing's single-sequence template: special tokens before and after sequence A."""

    def __init__(self, before: list[tuple[list[int], list[str], int]], seq_type: int,
                 after: list[tuple[list[int], list[str], int]]):
        self.before, self.seq_type, self.after = before, seq_type, after
        self.n_added = sum(len(ids) for ids, _, _ in before + after)

    def apply(self, ids: list[int], tokens: list[str], type_id: int) -> UnigramEncoding:
        """Specials around one window: the template's type ids on specials, type_id on the content."""
        out_ids: list[int] = []
        out_types: list[int] = []
        out_tokens: list[str] = []
        for sp_ids, sp_tokens, sp_type in self.before:
            out_ids += sp_ids
            out_types += [sp_type] * len(sp_ids)
            out_tokens += sp_tokens
        out_ids += ids
        out_types += [type_id] * len(ids)
        out_tokens += tokens
        for sp_ids, sp_tokens, sp_type in self.after:
            out_ids += sp_ids
            out_types += [sp_type] * len(sp_ids)
            out_tokens += sp_tokens
        return UnigramEncoding(out_ids, out_types, out_tokens)


class UnigramTokenizer:
    """tokenizers.Tokenizer's encode/encode_batch for a Unigram tokenizer.json, ids identical, vocabulary
    held as a dict piece -> id, an array of float64 scores and, per two-character start, the longest piece's
    length (which bounds the lengths tried at a position; the pieces' 255k proper prefixes, a trie's inner
    nodes, would stop the search sooner but cost 37 MB for XLM-R)."""

    def __init__(self, pieces: list[str], scores: np.ndarray, unk_id: int, config: dict[str, Any]):
        self._pieces = pieces
        self.scores = scores  # float64, one per piece (kept for callers; the search reads _score)
        self._score = scores.data  # a memoryview: indexing gives a Python float, far faster than numpy
        self.unk_id = unk_id
        self._unk_score = float(scores.min()) - K_UNK_PENALTY
        lookup: dict[str, int] = {}
        for i, p in enumerate(pieces):
            lookup[p] = i  # a duplicate piece keeps its last id, as tokenizers' token_to_ids
        caps: dict[str, int] = {}
        for p in pieces:
            if len(p) > 1 and caps.get(p[:2], 0) < len(p):
                caps[p[:2]] = len(p)
        self._lookup, self._caps = lookup, caps
        self._cache: dict[str, tuple[list[int], list[str]]] = {}
        self._padding_in_file = config.get("padding") is not None
        self._truncation: dict[str, Any] | None = None
        trunc = config.get("truncation")
        if trunc is not None:
            self._truncation = {"max_length": int(trunc["max_length"]), "stride": int(trunc.get("stride", 0)),
                                "strategy": str(trunc.get("strategy", "LongestFirst")),
                                "direction": str(trunc.get("direction", "Right"))}
        self._template = _template(config.get("post_processor"))
        self._tiny, self._added, self._tiny_to_real = _tiny_tokenizer(config, lookup, len(pieces))
        normalizer, pre = self._tiny.normalizer, self._tiny.pre_tokenizer
        self._normalize = None if normalizer is None else normalizer.normalize_str
        self._pre_tokenize = None if pre is None else pre.pre_tokenize_str
        self._raw_trigger, self._norm_trigger = self._triggers(config)

    def _triggers(self, config: dict[str, Any]) -> tuple[re.Pattern[str] | None, re.Pattern[str] | None]:
        """Patterns of added tokens' contents in the raw text and (normalised) in the normalised text: a text
        either matches goes the way tokenizers itself splits added tokens (the one-piece Tokenizer)."""
        raw: list[str] = []
        norm: list[str] = []
        for tok in config.get("added_tokens") or []:
            content = str(tok.get("content", ""))
            if not content:
                continue  # tokenizers ignores an empty added token
            raw.append(content)
            nc = self._normalize(content) if self._normalize is not None else content
            norm += [nc, content]
        if not raw:
            return None, None
        if "" in norm:
            return re.compile(""), None  # a token normalising to nothing: send every text the exact way
        return _alternation(raw), _alternation(norm)

    # -- the tokenizers.Tokenizer surface edgeemb uses ------------------------------------------------
    def no_padding(self) -> None:
        """No padding (batching pads); also drops a padding block the file had, which is not implemented."""
        self._padding_in_file = False

    def enable_truncation(self, max_length: int, stride: int = 0, strategy: str = "longest_first",
                          direction: str = "right") -> None:
        """Truncate to max_length tokens including the template's special tokens, as tokenizers does."""
        if strategy not in ("longest_first", "only_first") or direction not in ("left", "right"):
            raise ValueError(f"unsupported truncation strategy {strategy!r} or direction {direction!r}")
        n_added = self._template.n_added if self._template is not None else 0
        if n_added <= max_length < n_added + stride:  # (below n_added tokenizers' usize wraps: see _post_process)
            raise ValueError(f"tokenizer stride set to {stride}, which is greater than or equal to its effective "
                             f"max length of {max_length - n_added} (= {max_length} original max length - "
                             f"{n_added} added special tokens)")
        self._truncation = {"max_length": max_length, "stride": stride,
                            "strategy": "LongestFirst" if strategy == "longest_first" else "OnlyFirst",
                            "direction": direction.capitalize()}

    def no_truncation(self) -> None:
        """Keep every token."""
        self._truncation = None

    @property
    def truncation(self) -> dict[str, Any] | None:
        """The truncation parameters in force (None when off)."""
        if self._truncation is None:
            return None
        t = self._truncation
        return {"max_length": t["max_length"], "stride": t["stride"],
                "strategy": "longest_first" if t["strategy"] == "LongestFirst" else "only_first",
                "direction": t["direction"].lower()}

    def get_vocab_size(self, with_added_tokens: bool = True) -> int:
        """Model pieces (duplicates counted), or distinct strings with added tokens, as tokenizers counts."""
        if not with_added_tokens:
            return len(self._pieces)
        return len(self._lookup) + sum(1 for c in self._added if c not in self._lookup)

    def get_vocab(self, with_added_tokens: bool = True) -> dict[str, int]:
        """piece -> id (and added tokens' content -> id)."""
        out = dict(self._lookup)
        if with_added_tokens:
            out.update(self._added)
        return out

    def id_to_token(self, id: int) -> str | None:
        """The piece (or added token) with this id, None when out of range."""
        for content, i in self._added.items():
            if i == id:
                return content
        return self._pieces[id] if 0 <= id < len(self._pieces) else None

    def token_to_id(self, token: str) -> int | None:
        """The id of a piece or added token, None when unknown."""
        if token in self._added:
            return self._added[token]
        return self._lookup.get(token)

    def encode(self, sequence: str, pair: None = None, is_pretokenized: bool = False,
               add_special_tokens: bool = True) -> UnigramEncoding:
        """One text, as Tokenizer.encode: normalise, pre-tokenise, segment, truncate, add the specials
        (single sequences of raw text only: pairs and pre-tokenised input are not implemented)."""
        if pair is not None or is_pretokenized:
            raise NotImplementedError("UnigramTokenizer encodes single raw texts only")
        if not isinstance(sequence, str):
            raise TypeError(f"encode expects a str, got {type(sequence).__name__}")
        if self._padding_in_file:
            raise NotImplementedError("padding from tokenizer.json is not implemented: call no_padding()")
        ids, tokens = self._content(sequence)
        return self._post_process(ids, tokens, add_special_tokens)

    def encode_batch(self, input: Iterable[str], is_pretokenized: bool = False,
                     add_special_tokens: bool = True) -> list[UnigramEncoding]:
        """Several texts, as Tokenizer.encode_batch (one thread)."""
        return [self.encode(t, None, is_pretokenized, add_special_tokens) for t in input]

    # -- the pipeline --------------------------------------------------------------------------------
    def _content(self, text: str) -> tuple[list[int], list[str]]:
        """Model ids and tokens of a text before post-processing."""
        if self._raw_trigger is not None and self._raw_trigger.search(text):
            return self._content_exact(text)
        norm = text if self._normalize is None else self._normalize(text)
        if self._norm_trigger is not None and self._norm_trigger.search(norm):
            return self._content_exact(text)
        words = [norm] if self._pre_tokenize is None else [w for w, _ in self._pre_tokenize(norm)]
        ids: list[int] = []
        tokens: list[str] = []
        for w in words:
            got = self._word(w)
            ids += got[0]
            tokens += got[1]
        return ids, tokens

    def _content_exact(self, text: str) -> tuple[list[int], list[str]]:
        """A text holding an added token: the one-piece Tokenizer splits it exactly as tokenizers would
        (added tokens with their flags, per-split normalisation, then pre-tokenisation; each word comes back
        as one fused unknown token) and each word is segmented here."""
        enc = self._tiny.encode(text, add_special_tokens=False)
        ids: list[int] = []
        tokens: list[str] = []
        for tid, tok in zip(enc.ids, enc.tokens):
            real = self._tiny_to_real.get(tid)
            if real is None:
                got = self._word(tok)
                ids += got[0]
                tokens += got[1]
            else:
                ids.append(real)
                tokens.append(tok)
        return ids, tokens

    def _word(self, w: str) -> tuple[list[int], list[str]]:
        """Segmentation of one pre-tokenised word, through the bounded cache."""
        got = self._cache.get(w)
        if got is None:
            got = self._segment(w)
            if len(w) < CACHE_MAX_CHARS and len(self._cache) < CACHE_CAPACITY:
                self._cache[w] = got
        return got

    def _segment(self, w: str) -> tuple[list[int], list[str]]:
        """tokenizers' Unigram.encode_optimized + tokenize on one word: Viterbi over characters; ties keep the
        first candidate (earlier start, then shorter piece, then the unknown); unknown runs are fused."""
        n = len(w)
        if n == 0:
            return [], []
        get = self._lookup.get
        cap = self._caps.get
        score = self._score
        unk = self.unk_id
        unk_score = self._unk_score
        # best[j] = -inf stands for tokenizers' "no path ends at j yet" (scores are finite and bounded, see
        # _build, so every real candidate beats it); candidates for one end are offered in tokenizers' order:
        # earlier starts first, from one start the one-character piece (or else the unknown) then longer ones
        best = [_NEG_INF] * (n + 1)
        best[0] = 0.0
        back = [0] * (n + 1)
        node = [0] * (n + 1)
        for i in range(n):
            base = best[i]
            pid = get(w[i])
            if pid is None:  # no one-character piece here: the unknown covers this character
                pid, cand = unk, base + unk_score
            else:
                cand = base + score[pid]
            if cand > best[i + 1]:
                best[i + 1], back[i + 1], node[i + 1] = cand, i, pid
            stop = i + cap(w[i:i + 2], 1)
            for j in range(i + 2, min(stop, n) + 1):  # longer pieces, shorter first (as the trie yields them)
                pid = get(w[i:j])
                if pid is not None:
                    cand = base + score[pid]
                    if cand > best[j]:
                        best[j], back[j], node[j] = cand, i, pid
        ids: list[int] = []
        tokens: list[str] = []
        j = n
        fused_end = -1  # end of the run of unknowns being fused (walking backwards)
        while j > 0:
            i = back[j]
            if node[j] == unk:
                if fused_end < 0:
                    fused_end = j
            else:
                if fused_end >= 0:
                    self._emit_fused(w[j:fused_end], ids, tokens)
                    fused_end = -1
                ids.append(node[j])
                tokens.append(w[i:j])
            j = i
        if fused_end >= 0:
            self._emit_fused(w[:fused_end], ids, tokens)
        ids.reverse()
        tokens.reverse()
        return ids, tokens

    def _emit_fused(self, s: str, ids: list[int], tokens: list[str]) -> None:
        """A fused unknown run: its own id when the run happens to be a piece, else unk (no byte fallback)."""
        pid = self._lookup.get(s)
        ids.append(self.unk_id if pid is None else pid)
        tokens.append(s)

    def _post_process(self, ids: list[int], tokens: list[str], add_special: bool) -> UnigramEncoding:
        """Truncation into windows (the first is the encoding, the rest its overflowing), then the template
        on each: content type ids are the template's on the first window, 0 on the others, as tokenizers."""
        template = self._template
        n_added = template.n_added if template is not None and add_special else 0
        windows = [(0, len(ids))]
        if self._truncation is not None:
            t = self._truncation
            if t["max_length"] >= n_added:  # else tokenizers' max_length - n_added wraps around: no truncation
                windows = _windows(len(ids), t["max_length"] - n_added, t["stride"], t["direction"] == "Left")
        encs: list[UnigramEncoding] = []
        for k, (a, b) in enumerate(windows):
            wids, wtoks = ids[a:b], tokens[a:b]
            if template is None:
                encs.append(UnigramEncoding(wids, [0] * len(wids), wtoks))
            elif add_special:
                encs.append(template.apply(wids, wtoks, template.seq_type if k == 0 else 0))
            else:
                encs.append(UnigramEncoding(wids, [template.seq_type if k == 0 else 0] * len(wids), wtoks))
        first = encs[0]
        first.overflowing = encs[1:]
        return first


def _alternation(strings: list[str]) -> re.Pattern[str]:
    """A pattern matching any of the strings (longest first)."""
    return re.compile("|".join(re.escape(x) for x in sorted(set(strings), key=len, reverse=True)))


def _windows(n: int, max_len: int, stride: int, left: bool) -> list[tuple[int, int]]:
    """Encoding.truncate's [start, stop) parts of n tokens: the kept one first, then the overflowing ones."""
    if max_len >= n:
        return [(0, n)]
    if max_len == 0:
        return [(0, 0), (0, n)]
    if stride >= max_len:
        raise ValueError(f"stride {stride} must be strictly less than max_len={max_len}")
    step = max_len - stride
    parts: list[tuple[int, int]] = []
    if not left:
        for start in range(0, n, step):
            stop = min(start + max_len, n)
            parts.append((start, stop))
            if stop == n:
                break
    else:
        for last in range(n - 1, -1, -step):
            start = max(0, last + 1 - max_len)
            parts.append((start, last + 1))
            if start == 0:
                break
    return parts


def _template(pp: Any) -> _Template | None:
    """The post_processor as a _Template (None: there is none). Raises _Unsupported for anything but a
    TemplateProcessing whose single template has exactly one sequence (A)."""
    if pp is None:
        return None
    if not isinstance(pp, dict) or pp.get("type") != "TemplateProcessing":
        raise _Unsupported(f"post_processor {pp.get('type') if isinstance(pp, dict) else pp!r}")
    specials = pp.get("special_tokens") or {}
    before: list[tuple[list[int], list[str], int]] = []
    after: list[tuple[list[int], list[str], int]] = []
    seq_type: int | None = None
    for piece in pp.get("single") or []:
        if "Sequence" in piece:
            if seq_type is not None or piece["Sequence"].get("id") != "A":
                raise _Unsupported("single template with other than one sequence A")
            seq_type = int(piece["Sequence"].get("type_id", 0))
        elif "SpecialToken" in piece:
            sp = specials[piece["SpecialToken"]["id"]]
            entry = ([int(i) for i in sp["ids"]], [str(t) for t in sp["tokens"]],
                     int(piece["SpecialToken"].get("type_id", 0)))
            (before if seq_type is None else after).append(entry)
        else:
            raise _Unsupported(f"template piece {piece!r}")
    if seq_type is None:
        raise _Unsupported("single template without sequence A")
    return _Template(before, seq_type, after)


class _Unsupported(Exception):
    """A tokenizer.json feature this module does not reproduce: the caller falls back to tokenizers."""


def _tiny_tokenizer(config: dict[str, Any], lookup: dict[str, int],
                    n_pieces: int) -> tuple[Any, dict[str, int], dict[int, int]]:
    """A tokenizers.Tokenizer from the same JSON with a one-piece vocabulary (normaliser, pre-tokeniser and
    added tokens kept; no post-processor, truncation or padding), the added tokens' real ids (as tokenizers'
    AddedVocabulary.add_tokens assigns them: the piece's id, else the next id past the vocabulary) and a map
    from the tiny tokenizer's added-token ids to the real ones."""
    added_tokens = [t for t in config.get("added_tokens") or [] if t.get("content")]
    contents = {str(t["content"]) for t in added_tokens}
    unk = "<unk>"
    while unk in contents:
        unk += "_"
    tiny_cfg = dict(config)
    tiny_cfg.update(model={"type": "Unigram", "unk_id": 0, "vocab": [[unk, 0.0]], "byte_fallback": False},
                    post_processor=None, truncation=None, padding=None, decoder=None)
    tiny = Tokenizer.from_str(json.dumps(tiny_cfg))
    real: dict[str, int] = {}
    next_id = n_pieces
    for t in added_tokens:
        c = str(t["content"])
        if c in real:
            continue
        pid = lookup.get(c)
        if pid is not None:
            real[c] = pid
        else:
            real[c] = next_id
            next_id += 1
    tiny_to_real: dict[int, int] = {}
    for c, i in real.items():
        tid = tiny.token_to_id(c)
        if tid is None or tid == 0:
            raise _Unsupported(f"added token {c!r} has no id of its own in the one-piece tokenizer")
        tiny_to_real[int(tid)] = i
    return tiny, real, tiny_to_real


def _parse_vocab(data: bytes, pos: int) -> tuple[list[str], np.ndarray, int] | None:
    """The `[["piece", score], ...]` array whose first entry starts at pos: pieces, float64 scores and the
    offset just past its closing bracket; None when the bytes there are not such an array."""
    pieces: list[str] = []
    scores = array("d")
    end = _EMPTY.match(data, pos)
    if end is not None:
        return pieces, np.asarray(scores, dtype=np.float64), end.end()
    loads = json.loads
    for m in _ENTRY.finditer(data, pos):
        if m.start() != pos:
            return None
        raw = m.group(1)
        if b"\\" in raw:
            piece = loads(b'"' + raw + b'"')
            try:
                piece.encode("utf-8")
            except UnicodeEncodeError:  # a lone surrogate escape, which tokenizers' loader rejects
                return None
        else:
            piece = raw.decode("utf-8")
        pieces.append(piece)
        scores.append(float(m.group(2)))
        pos = m.end()
        if m.group(3) == b"]":
            return pieces, np.frombuffer(scores, dtype=np.float64).copy(), pos
    return None


def load_unigram(path: str | Path) -> UnigramTokenizer | None:
    """A UnigramTokenizer for a tokenizer.json whose model is Unigram, else None (the caller then uses
    tokenizers). Also None for what is not reproduced here: byte_fallback (tokens <0x..> for unknown bytes),
    no unk_id, post-processors other than TemplateProcessing, only_second truncation, version != 1.0, and for
    a file tokenizers would refuse (it then says why). The file is read as bytes, the vocab array cut out and
    parsed entry by entry, the rest json.loads-ed: json.load of the whole 17 MB file would peak at ~165 MB."""
    data = Path(path).read_bytes()
    if b'"Unigram"' not in data:  # WordPiece, BPE, ...: no regex scan of the whole file on every load
        return None
    found = _read(data)
    del data  # the bytes die before the dict is built
    return None if found is None else _build(*found)


def _read(data: bytes) -> tuple[dict[str, Any], dict[str, Any], list[str], np.ndarray] | None:
    """(config without the vocab, its model block, pieces, scores) of a tokenizer.json with a `vocab` list."""
    for key in _VOCAB_KEY.finditer(data):
        parsed = _parse_vocab(data, key.end())
        if parsed is None:
            continue
        pieces, scores, end = parsed
        try:
            config = json.loads(data[:key.end() - 1] + b"[]" + data[end:])
        except ValueError:
            continue
        model = config.get("model") if isinstance(config, dict) else None
        if isinstance(model, dict) and model.get("vocab") == []:
            return config, model, pieces, scores
    return None


def _build(config: dict[str, Any], model: dict[str, Any], pieces: list[str],
           scores: np.ndarray) -> UnigramTokenizer | None:
    """The tokenizer, or None where the file asks for something not reproduced here."""
    unk_id = model.get("unk_id")
    if (model.get("type") != "Unigram" or model.get("byte_fallback") or not isinstance(unk_id, int)
            or not 0 <= unk_id < len(pieces) or config.get("version", "1.0") != "1.0"):
        return None  # byte_fallback: ids for <0xNN> pieces; no unk_id: tokenizers raises on unknowns
    trunc = config.get("truncation")
    if trunc is not None and trunc.get("strategy") == "OnlySecond":
        return None
    if len(scores) and not np.abs(scores).max() <= MAX_ABS_SCORE:
        return None
    try:
        return UnigramTokenizer(pieces, scores, unk_id, config)
    except Exception:  # noqa: BLE001 - _Unsupported, or a file tokenizers itself would refuse: let it say why
        return None
