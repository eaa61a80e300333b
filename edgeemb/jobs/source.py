"""A corpus split into stable blocks of B documents: one streaming scan plans them, any process reads one back.

The formats are those `index build` reads (.txt one document per line, .jsonl with a text field, .tsv with a
header naming the text column) plus Parquet (via pyarrow). Blocks count non-empty documents, so block k always
holds documents k*B .. k*B+B-1 of the same file; a block is located by byte offsets (line formats) or row
numbers (Parquet), so a worker reads its block without reading the rest. Documents without an id get
`doc-<n>`, n counting non-empty documents from 0: the ids `index build` gives the same corpus.

Lines end at "\\n" (an "\\r" before it is dropped): `edgeemb.corpus.read_corpus` splits with str.splitlines,
which also breaks at form feeds, U+2028 and other Unicode separators; a corpus holding those inside a line
reads differently there (see the report in docs).
"""
from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..bundle.verify import sha256_file
from ..errors import CorpusError

FORMATS = {".txt": "txt", ".jsonl": "jsonl", ".tsv": "tsv", ".parquet": "parquet", ".pq": "parquet"}
BOM = b"\xef\xbb\xbf"


@dataclass(frozen=True)
class CorpusSpec:
    """Which file, in which format, with which text and id fields."""

    path: str
    format: str
    text_field: str = "text"
    id_field: str = "id"


@dataclass(frozen=True)
class BlockRef:
    """Where block `index` lies: [start, end) bytes (line formats) or rows (Parquet), its first line or row
    number (for messages), the ordinal of its first document and how many documents it holds."""

    index: int
    start: int
    end: int
    line: int
    first_doc: int
    rows: int


@dataclass
class Plan:
    """The corpus cut into blocks, plus what identifies the file (size, mtime, sha256)."""

    spec: CorpusSpec
    block_rows: int
    blocks: list[BlockRef]
    rows: int
    skipped_empty: int
    has_ids: bool
    size: int
    mtime_ns: int
    sha256: str
    fieldnames: list[str] | None = None  # .tsv header

    def corpus_record(self) -> dict[str, Any]:
        """What a manifest records about the input."""
        return {"path": self.spec.path, "format": self.spec.format, "size": self.size, "mtime_ns": self.mtime_ns,
                "sha256": self.sha256, "text_field": self.spec.text_field, "id_field": self.spec.id_field,
                "ids": "corpus" if self.has_ids else "generated", "rows": self.rows,
                "skipped_empty": self.skipped_empty}


@dataclass
class Docs:
    """The documents of one block, in corpus order."""

    ids: list[str] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    metas: list[dict[str, Any]] = field(default_factory=list)


def corpus_spec(path: str | os.PathLike[str], text_field: str = "text", id_field: str = "id") -> CorpusSpec:
    """Check the corpus exists and has a known suffix; the path is made absolute so workers find it."""
    p = Path(path)
    if not p.is_file():
        raise CorpusError(f"corpus not found: {p}" if not p.exists() else f"corpus {p} is not a file")
    fmt = FORMATS.get(p.suffix.lower())
    if fmt is None:
        raise CorpusError(f"{p}: unknown corpus format {p.suffix!r} (use .txt, .jsonl, .tsv or .parquet)")
    if not os.access(p, os.R_OK):
        raise CorpusError(f"{p}: not readable (permission denied)")
    return CorpusSpec(str(p.resolve()), fmt, text_field, id_field)


def plan_blocks(spec: CorpusSpec, block_rows: int) -> Plan:
    """Scan the corpus once (validating every record, hashing the file) and cut it into blocks of block_rows."""
    if isinstance(block_rows, bool) or not isinstance(block_rows, int) or block_rows < 1:
        raise CorpusError(f"block_rows must be a positive int, got {block_rows!r}")
    st = os.stat(spec.path)
    if spec.format == "parquet":
        return _plan_parquet(spec, block_rows, st)
    return _plan_lines(spec, block_rows, st)


def read_block(plan_or_spec: Plan | tuple[CorpusSpec, list[str] | None], ref: BlockRef) -> Docs:
    """The documents of one block; an error if the file no longer holds what the plan saw."""
    spec, fieldnames = (plan_or_spec.spec, plan_or_spec.fieldnames) if isinstance(plan_or_spec, Plan) \
        else plan_or_spec
    docs = _read_parquet(spec, ref) if spec.format == "parquet" else _read_lines(spec, fieldnames, ref)
    if len(docs.texts) != ref.rows:
        raise CorpusError(f"{spec.path}: block {ref.index} holds {len(docs.texts)} documents, the plan "
                          f"{ref.rows}: the corpus changed while the job ran")
    return docs


# -- line formats -------------------------------------------------------------------------------------------
def _decode(raw: bytes, path: str, line_no: int, offset: int) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CorpusError(f"{path}: line {line_no} is not valid UTF-8 (byte {offset + exc.start})") from None


def _strip_eol(raw: bytes) -> bytes:
    if raw.endswith(b"\n"):
        raw = raw[:-1]
    if raw.endswith(b"\r"):
        raw = raw[:-1]
    return raw


def _header(spec: CorpusSpec, raw: bytes) -> list[str]:
    names = _decode(_strip_eol(raw).removeprefix(BOM), spec.path, 1, 0).split("\t") if raw.strip() else []
    if spec.text_field not in names:
        raise CorpusError(f"{spec.path}: header {names} has no {spec.text_field!r} column")
    return names


def _parse(spec: CorpusSpec, fieldnames: list[str] | None, raw: bytes, line_no: int, offset: int
           ) -> tuple[str, str | None, dict[str, Any]] | None:
    """(text, id or None, metadata) of one line, or None for a line that is no record (blank jsonl/tsv)."""
    line = _decode(_strip_eol(raw), spec.path, line_no, offset)
    row: dict[Any, Any]
    if spec.format == "txt":
        return line, None, {}
    if spec.format == "jsonl":
        if not line.strip():
            return None
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise CorpusError(f"{spec.path}: line {line_no} is not valid JSON ({exc.msg})") from None
        if not isinstance(row, dict):
            raise CorpusError(f"{spec.path}: line {line_no} is not a JSON object")
    else:  # tsv, as csv.DictReader(delimiter="\t", quoting=QUOTE_NONE) reads it
        if line == "":
            return None
        values = line.split("\t")
        assert fieldnames is not None
        row = dict(zip(fieldnames, values))
        if len(values) > len(fieldnames):
            row[None] = values[len(fieldnames):]
        for key in fieldnames[len(values):]:
            row[key] = None
    text = row.get(spec.text_field)
    if not isinstance(text, str):
        raise CorpusError(f"{spec.path}: line {line_no} has no string field {spec.text_field!r}")
    doc_id = str(row[spec.id_field]) if row.get(spec.id_field) is not None else None
    meta = {k: v for k, v in row.items() if k not in (spec.text_field, spec.id_field) and v is not None}
    return text, doc_id, meta


class _Cutter:
    """Counts documents and opens a new block every block_rows of them."""

    def __init__(self, spec: CorpusSpec, block_rows: int):
        self.spec, self.block_rows = spec, block_rows
        self.blocks: list[list[int]] = []  # [index, start, end, line, first_doc, rows]
        self.docs = self.skipped = 0
        self.has_ids: bool | None = None

    def add(self, text: str, doc_id: str | None, start: int, line_no: int, what: str) -> None:
        if not text.strip():
            self.skipped += 1
            return
        if self.has_ids is None:
            self.has_ids = doc_id is not None
        elif self.has_ids != (doc_id is not None):
            raise CorpusError(f"{self.spec.path}: {what} {line_no}: some documents have an "
                              f"{self.spec.id_field!r} and some do not")
        if self.docs % self.block_rows == 0:
            if self.blocks:
                self.blocks[-1][2] = start
            self.blocks.append([len(self.blocks), start, -1, line_no, self.docs, 0])
        self.blocks[-1][5] += 1
        self.docs += 1

    def plan(self, end: int, st: os.stat_result, sha: str, fieldnames: list[str] | None) -> Plan:
        if self.blocks:
            self.blocks[-1][2] = end
        return Plan(self.spec, self.block_rows, [BlockRef(*b) for b in self.blocks], self.docs, self.skipped,
                    bool(self.has_ids), st.st_size, st.st_mtime_ns, sha, fieldnames)


def _plan_lines(spec: CorpusSpec, block_rows: int, st: os.stat_result) -> Plan:
    cut, h = _Cutter(spec, block_rows), hashlib.sha256()
    fieldnames, offset = None, 0
    try:
        with open(spec.path, "rb") as f:
            for line_no, raw in enumerate(f, 1):
                h.update(raw)
                start, offset = offset, offset + len(raw)
                if line_no == 1:
                    if spec.format == "tsv":
                        fieldnames = _header(spec, raw)
                        continue
                    raw = raw.removeprefix(BOM)
                parsed = _parse(spec, fieldnames, raw, line_no, start)
                if parsed is not None:
                    cut.add(parsed[0], parsed[1], start, line_no, "line")
    except OSError as exc:
        raise CorpusError(f"{spec.path}: cannot read ({exc.strerror or exc})") from None
    if spec.format == "tsv" and fieldnames is None:
        raise CorpusError(f"{spec.path}: empty file, no header with a {spec.text_field!r} column")
    return cut.plan(offset, st, h.hexdigest(), fieldnames)


def _read_lines(spec: CorpusSpec, fieldnames: list[str] | None, ref: BlockRef) -> Docs:
    docs = Docs()
    try:
        with open(spec.path, "rb") as f:
            f.seek(ref.start)
            data = f.read(ref.end - ref.start)
    except OSError as exc:
        raise CorpusError(f"{spec.path}: cannot read ({exc.strerror or exc})") from None
    pos, line_no = 0, ref.line
    while pos < len(data):  # split as iterating the file in binary does: at "\n" only, keeping it
        nl = data.find(b"\n", pos)
        end = len(data) if nl < 0 else nl + 1
        raw, offset, pos = data[pos:end], ref.start + pos, end
        if offset == 0:
            raw = raw.removeprefix(BOM)
        parsed = _parse(spec, fieldnames, raw, line_no, offset)
        line_no += 1
        if parsed is None or not parsed[0].strip():
            continue
        text, doc_id, meta = parsed
        docs.ids.append(doc_id if doc_id is not None else f"doc-{ref.first_doc + len(docs.texts)}")
        docs.texts.append(text)
        docs.metas.append(meta)
    return docs


# -- Parquet ------------------------------------------------------------------------------------------------
def _pq() -> Any:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise CorpusError("reading Parquet needs pyarrow: pip install pyarrow (the ray extra brings it)") from None
    return pq


def _open_parquet(spec: CorpusSpec) -> tuple[Any, list[str]]:
    pq = _pq()
    try:
        pf = pq.ParquetFile(spec.path)
    except Exception as exc:  # noqa: BLE001 - pyarrow raises ArrowInvalid, OSError...
        raise CorpusError(f"{spec.path}: not a readable Parquet file ({str(exc).splitlines()[0]})") from None
    names = pf.schema_arrow.names
    if spec.text_field not in names:
        raise CorpusError(f"{spec.path}: columns {names} have no {spec.text_field!r} column")
    return pf, names


def _plan_parquet(spec: CorpusSpec, block_rows: int, st: os.stat_result) -> Plan:
    pf, names = _open_parquet(spec)
    columns = [spec.text_field] + ([spec.id_field] if spec.id_field in names else [])
    cut, row = _Cutter(spec, block_rows), 0
    for batch in pf.iter_batches(batch_size=65536, columns=columns):
        texts = batch.column(0).to_pylist()
        ids = batch.column(1).to_pylist() if len(columns) > 1 else [None] * len(texts)
        for text, doc_id in zip(texts, ids):
            if not isinstance(text, str):
                raise CorpusError(f"{spec.path}: row {row} has no string field {spec.text_field!r}")
            cut.add(text, None if doc_id is None else str(doc_id), row, row, "row")
            row += 1
    return cut.plan(row, st, sha256_file(spec.path), None)


def _read_parquet(spec: CorpusSpec, ref: BlockRef) -> Docs:
    pf, _ = _open_parquet(spec)
    groups, first, acc = [], None, 0
    for i in range(pf.metadata.num_row_groups):
        n = pf.metadata.row_group(i).num_rows
        if acc + n > ref.start and acc < ref.end:
            groups.append(i)
            first = acc if first is None else first
        acc += n
    docs = Docs()
    if not groups:
        return docs
    assert first is not None  # set with the first group
    table = pf.read_row_groups(groups).slice(ref.start - first, ref.end - ref.start)
    for row in table.to_pylist():
        text = row.get(spec.text_field)
        if not isinstance(text, str) or not text.strip():
            continue
        doc_id = row.get(spec.id_field)
        docs.ids.append(str(doc_id) if doc_id is not None else f"doc-{ref.first_doc + len(docs.texts)}")
        docs.texts.append(text)
        meta = {k: v for k, v in row.items() if k not in (spec.text_field, spec.id_field) and v is not None}
        docs.metas.append(json.loads(json.dumps(meta, default=str)))  # dates, decimals, bytes -> JSON values
    return docs





def iter_blocks(plan: Plan, refs: list[BlockRef]) -> Iterator[tuple[BlockRef, Docs]]:
    """Read the given blocks in order (the local engine's reader)."""
    for ref in refs:
        yield ref, read_block(plan, ref)
