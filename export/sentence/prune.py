"""A pruned-vocabulary bundle from an E5S1 container: keep only the pieces the full tokenizer produces over the
target languages' corpora, and carry their token-embedding rows bit-exactly.

Why: multilingual-e5-small's 250,002 XLM-R pieces cost ~280 MB of RSS in `tokenizers` (its Unigram trie, ~1.1 KB
a piece) and ~48 MB of 4-bit table in the graph, while en + zh text uses ~40k of them
(docs/results/multilingual-pruned.md). Kept: the specials, every piece seen at least `min_count` times (or the
`top_n` most frequent), the pieces of the model's prompts, and every single-character piece of the vocabulary, so
any text in those scripts still segments without <unk>. A text whose full segmentation uses only kept pieces
segments identically (every segmentation over the kept pieces is also one over the full vocabulary, so the best
one is unchanged). The kept pieces become a smaller E5S1 container (same scores, normalisation map and weights;
the word table's rows subset block by block, a row being hidden/32 Q4_0 blocks), which the ordinary container
export (bert_export.py) turns into the bundle, so everything else is exactly what the int4 export does.
"""
from __future__ import annotations

import hashlib
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from edgeemb.bundle import read_manifest, sha256_file, write_manifest

from ..common.errors import ExportError
from ..common.ggml_blocks import Q4_0_BYTES, QK
from ..common.onnx_tools import step
from .e5s1 import E5S1File, E5Vocab, read_e5s1, write_e5s1

# every piece the corpora produce: 4.4k pieces (~3 MB RSS) more than min_count 2, and the same segmentation as
# the full vocabulary for 91% / 96% of the STS-B en / zh test texts instead of 88% / 94%
DEFAULT_MIN_COUNT = 1


@dataclass
class PrunePlan:
    """Which source ids are kept (ascending: new id = position in `keep`) and why."""

    keep: list[int]
    source_pieces: int
    corpus_texts: int
    seen: int  # pieces the corpora produced at least once
    frequent: int  # pieces kept for their count (min_count / top_n)
    single_characters: int  # single-character pieces of the vocabulary (all kept)
    prompt_pieces: int  # pieces of the prompts (always kept)

    def summary(self) -> dict:
        """What the manifest records (the ids themselves by digest)."""
        out = {k: v for k, v in asdict(self).items() if k != "keep"}
        ids = np.asarray(self.keep, dtype="<i4").tobytes()
        return {**out, "kept": len(self.keep), "kept_ids_sha256": hashlib.sha256(ids).hexdigest()}


def piece_counts(tokenizer, corpora: Sequence[str | Path], text_field: str = "text"):
    """Token-id counts of the full tokenizer over the corpora (common/vocab.py, shared with static/distill.py)."""
    from ..common.vocab import corpus_texts, count_tokens

    return count_tokens(tokenizer, corpus_texts(corpora, text_field))


def check_options(corpora: Sequence[str | Path], min_count: int | None, top_n: int | None) -> None:
    """Refuse options that cannot prune, before any work is done."""
    if not corpora:
        raise ExportError("vocabulary pruning needs at least one corpus to count pieces over")
    for c in corpora:
        if not Path(c).is_file():
            raise ExportError(f"vocabulary corpus {c} does not exist")
    if min_count is None and top_n is None:
        raise ExportError("vocabulary pruning needs min_count or top_n")
    for key, value in (("min_count", min_count), ("top_n", top_n)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ExportError(f"{key} must be a positive integer, got {value!r}")


def select_pieces(vocab: E5Vocab, counts: np.ndarray, min_count: int | None = DEFAULT_MIN_COUNT,
                  top_n: int | None = None, always: Sequence[int] = (), corpus_texts: int = 0) -> PrunePlan:
    """Kept ids: specials, pieces counted >= min_count (at most the top_n by count, ties by score), `always`
    (the prompts' pieces) and every single-character piece; ExportError when the counts keep no piece."""
    n = len(vocab.pieces)
    counts = np.asarray(counts[:n], dtype=np.int64)
    specials = {vocab.bos, vocab.eos, vocab.pad, vocab.unk}
    eligible = np.nonzero(counts >= (min_count or 1))[0]
    eligible = np.array([i for i in eligible if int(i) not in specials], dtype=np.int64)
    if top_n is not None and len(eligible) > top_n:
        order = np.lexsort((-vocab.scores[eligible].astype(np.float64), -counts[eligible]))
        eligible = eligible[order[:top_n]]
    if len(eligible) == 0:
        raise ExportError(f"the corpora keep no piece: none of the vocabulary's {n} pieces occurs "
                          f"{min_count or 1} times or more in {corpus_texts} texts (lower min_count or add corpora)")
    singles = [i for i, p in enumerate(vocab.pieces) if len(p) == 1]
    keep = sorted(specials | {int(i) for i in eligible} | set(always) | set(singles))
    return PrunePlan(keep=keep, source_pieces=n, corpus_texts=corpus_texts, seen=int((counts > 0).sum()),
                     frequent=len(eligible), single_characters=len(singles), prompt_pieces=len(set(always)))


def table_rows(raw: np.ndarray, rows: int, cols: int, keep: Sequence[int]) -> bytes:
    """The Q4_0 bytes of a (rows, cols) table restricted to the kept rows (blocks unchanged, in kept order)."""
    if cols % QK:
        raise ExportError(f"a Q4_0 table's rows must be whole blocks of {QK}, got {cols} columns")
    per_row = cols // QK * Q4_0_BYTES
    table = np.asarray(raw, dtype=np.uint8).reshape(rows, per_row)
    return np.ascontiguousarray(table[np.asarray(keep, dtype=np.int64)]).tobytes()


def pruned_container(f: E5S1File, keep: Sequence[int], dst: Path) -> Path:
    """Write an E5S1 container holding only the kept pieces (ids renumbered in order) and their table rows."""
    v, h = f.vocab, f.header
    new = {old: i for i, old in enumerate(keep)}
    vocab = E5Vocab([v.pieces[i] for i in keep], v.scores[np.asarray(keep)], bos=new[v.bos], eos=new[v.eos],
                    pad=new[v.pad], unk=new[v.unk])
    tensors = {}
    for name, t in f.tensors.items():
        raw = f.raw(name)
        if name == "emb.word":
            if t.dtype != "Q4_0":
                raise ExportError(f"{f.path}: emb.word is {t.dtype}; pruning carries Q4_0 rows")
            tensors[name] = ("Q4_0", table_rows(raw, h.vocab, h.hidden, keep))
        else:
            tensors[name] = (t.dtype, bytes(raw))
    return write_e5s1(dst, replace(h, vocab=len(keep)), vocab, f.norm_map, tensors)


def prompt_ids(tokenizer, prompts: dict[str, str]) -> set[int]:
    """Ids of the pieces the prompts tokenise to (their texts are not in the corpora)."""
    return {i for p in prompts.values() if p for i in tokenizer.encode(p, add_special_tokens=False).ids}


def export_pruned(src: str | Path, out: str | Path, corpora: Sequence[str | Path],
                  min_count: int | None = DEFAULT_MIN_COUNT, top_n: int | None = None, quantization: str = "int4",
                  max_length: int | None = None, name: str | None = None, force: bool = False,
                  text_field: str = "text", corpus_names: Sequence[str] | None = None,
                  parity_texts: list[str] | None = None, check: bool = True) -> Path:
    """Count pieces over the corpora, write the pruned container to a temporary folder and export it like the
    full one; the manifest records the source container and the pruning (options.vocabulary)."""
    from .bert_export import export_bert_file
    from .bert_source import E5_PROMPTS
    from .unigram_tokenizer import tokenizer_from_map

    src, out = Path(src), Path(out)
    check_options(corpora, min_count, top_n)
    if out.exists() and not force and any(out.iterdir()):
        raise ExportError(f"{out} exists and is not empty; pass --force to replace it")
    f = read_e5s1(src)
    v = f.vocab
    full = tokenizer_from_map(v.pieces, v.scores, v.unk, v.bos, v.eos, f.norm_map, where=f"{src}: tokenizer")
    step(0, 6, f"pruning: counting pieces over {', '.join(Path(c).name for c in corpora)}")
    counts = piece_counts(full, corpora, text_field)
    plan = select_pieces(v, counts.counts, min_count, top_n, prompt_ids(full, E5_PROMPTS), counts.texts)
    step(0, 6, f"pruning: keeping {len(plan.keep)} of {plan.source_pieces} pieces ({plan.frequent} counted, "
               f"{plan.single_characters} single characters)")
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{out.name}.prune.") as tmp:
        container = pruned_container(f, plan.keep, Path(tmp) / src.name)
        del f
        export_bert_file(container, out, quantization, max_length, name=name, force=force, check=check,
                         parity_texts=parity_texts)
        pruned_sha = sha256_file(container)
    names = list(corpus_names) if corpus_names else [Path(c).name for c in corpora]
    manifest = read_manifest(out)
    manifest.source = {**manifest.source, "files": {src.name: sha256_file(src)},
                       "pruned_container_sha256": pruned_sha}
    manifest.options = {**manifest.options, "vocabulary": {
        "pruned": True, "corpora": {n: sha256_file(c) for n, c in zip(names, corpora)}, "text_field": text_field,
        "min_count": min_count, "top_n": top_n, **plan.summary()}}
    write_manifest(out, manifest)
    return out
