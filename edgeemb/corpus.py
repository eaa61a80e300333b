"""Read a corpus file as a stream: .txt (one document per line), .jsonl (a text field), .tsv (a header naming the
text column).

Lines end at "\\n" only (an "\\r" before it is dropped); form feeds, vertical tabs, U+2028, U+0085 and the other
characters Python's str.splitlines also breaks at stay inside the document. A line may hold at most
`max_line_bytes` (1 MiB by default) and is read with that bound, so a huge file without newlines is refused at
its first line instead of being read whole. Empty documents are skipped and counted. Documents without an id get
`doc-<n>`, n counting non-empty documents from 0 (the ids `Index.add` would give them). Every problem is a
CorpusError naming the line.
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from .errors import CorpusError
from .jsondepth import json_depth

FORMATS = (".txt", ".jsonl", ".tsv")
MAX_LINE_BYTES = 1 << 20  # one document's line, fields included; --max-doc-bytes raises it
MAX_NESTING = 64  # JSON nesting a metadata value may have
BOM = b"\xef\xbb\xbf"


@dataclass
class Doc:
    """One document: the line it came from, its id (given or generated), text and metadata."""

    line: int
    id: str
    text: str
    metadata: dict[str, Any]


@dataclass
class Corpus:
    """Documents with optional ids and metadata, plus how many empty lines were skipped (a whole corpus in lists)."""

    texts: list[str] = field(default_factory=list)
    ids: list[str] | None = None
    metadata: list[dict[str, Any]] = field(default_factory=list)
    skipped_empty: int = 0


@dataclass
class CorpusStats:
    """What a validating scan found: documents, empty lines skipped, whether the corpus gives its own ids."""

    docs: int
    skipped_empty: int
    has_ids: bool


class CorpusReader:
    """Streams the documents of a corpus file, one bounded line at a time."""

    def __init__(self, path: str | Path, text_field: str = "text", id_field: str = "id",
                 max_line_bytes: int = MAX_LINE_BYTES):
        self.path = Path(path)
        self.text_field, self.id_field = text_field, id_field
        if isinstance(max_line_bytes, bool) or not isinstance(max_line_bytes, int) or max_line_bytes < 1:
            raise CorpusError(f"max_line_bytes must be a positive int, got {max_line_bytes!r}")
        self.max_line_bytes = max_line_bytes
        if not self.path.is_file():
            raise CorpusError(f"corpus not found: {self.path}" if not self.path.exists()
                              else f"corpus {self.path} is not a file")
        self.format = self.path.suffix.lower()
        if self.format not in FORMATS:
            raise CorpusError(f"{self.path}: unknown corpus format {self.format!r} (use .txt, .jsonl or .tsv)")
        self.skipped_empty = 0
        self.has_ids = False  # after a read: the corpus gives its own ids

    def __iter__(self) -> Iterator[Doc]:
        """The non-empty documents in file order (self.skipped_empty counts the others)."""
        self.skipped_empty, self.has_ids, n, has_ids = 0, False, 0, None
        try:
            with open(self.path, "rb") as f:
                header = None
                for line_no, raw in enumerate(self._lines(f), 1):
                    if line_no == 1 and self.format == ".tsv":
                        header = self._header(raw)
                        continue
                    parsed = self._parse(raw, line_no, header)
                    if parsed is None:
                        continue
                    text, doc_id, meta = parsed
                    if not text.strip():
                        self.skipped_empty += 1
                        continue
                    if has_ids is None:
                        has_ids = self.has_ids = doc_id is not None
                    elif has_ids != (doc_id is not None):
                        raise CorpusError(f"{self.path}: line {line_no}: some documents have an {self.id_field!r} "
                                          f"and some do not")
                    yield Doc(line_no, doc_id if doc_id is not None else f"doc-{n}", text, meta)
                    n += 1
                if self.format == ".tsv" and header is None:
                    raise CorpusError(f"{self.path}: empty file, no header with a {self.text_field!r} column")
        except OSError as exc:
            raise CorpusError(f"{self.path}: cannot read ({exc.strerror or exc})") from None

    def scan(self) -> CorpusStats:
        """Read the whole corpus once, checking every line (and that ids are unique), holding one line at a time
        plus 8 bytes per id: errors come out before anything is built."""
        seen: set[bytes] = set()
        n = 0
        for doc in self:
            key = hashlib.blake2b(doc.id.encode(), digest_size=8).digest()
            if key in seen and doc.id in _ids_up_to(self, doc.line):
                raise CorpusError(f"{self.path}: line {doc.line}: id {doc.id!r} appears earlier in the corpus")
            seen.add(key)
            n += 1
        return CorpusStats(n, self.skipped_empty, self.has_ids)

    # -- internals ----------------------------------------------------------------------------------------
    def _lines(self, f: BinaryIO) -> Iterator[bytes]:
        line_no = 0
        while True:
            raw = f.readline(self.max_line_bytes + 1)
            if not raw:
                return
            line_no += 1
            if line_no == 1:
                raw = raw.removeprefix(BOM)
            body = raw[:-1] if raw.endswith(b"\n") else raw
            if len(body) > self.max_line_bytes or (not raw.endswith(b"\n") and len(raw) > self.max_line_bytes):
                raise CorpusError(f"{self.path}: line {line_no} is longer than {self.max_line_bytes:,} bytes, the "
                                  f"limit for one document (--max-doc-bytes / max_line_bytes raises it)")
            yield body[:-1] if body.endswith(b"\r") else body

    def _decode(self, raw: bytes, line_no: int) -> str:
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise CorpusError(f"{self.path}: line {line_no} is not valid UTF-8 (byte {exc.start} of the line)") from None

    def _header(self, raw: bytes) -> list[str]:
        names = self._decode(raw, 1).split("\t") if raw.strip() else []
        if self.text_field not in names:
            raise CorpusError(f"{self.path}: header {names} has no {self.text_field!r} column (choose the text "
                              f"column with --text-field NAME)")
        return names

    def _parse(self, raw: bytes, line_no: int, header: list[str] | None) -> tuple[str, str | None, dict[str, Any]] | None:
        line = self._decode(raw, line_no)
        if self.format == ".txt":
            return _checked_text(line, self.path, line_no), None, {}
        if not line.strip():
            return None
        if self.format == ".jsonl":
            row = self._json(line, line_no)
        else:
            values = line.split("\t")
            assert header is not None  # .tsv rows are parsed after the header line
            if len(values) > len(header):
                raise CorpusError(f"{self.path}: line {line_no} has {len(values)} tab-separated fields, the header "
                                  f"{len(header)}")
            row = dict(zip(header, values))
        text = row.get(self.text_field)
        if not isinstance(text, str):
            raise CorpusError(f"{self.path}: line {line_no} has no string field {self.text_field!r} (choose the "
                              f"field with --text-field NAME)")
        doc_id = row.get(self.id_field)
        if doc_id is not None:
            doc_id = doc_id if isinstance(doc_id, str) else json.dumps(doc_id) if isinstance(doc_id, (int, float)) \
                else None
            if not doc_id:
                raise CorpusError(f"{self.path}: line {line_no}: field {self.id_field!r} must be a non-empty str "
                                  f"or number")
            _checked_text(doc_id, self.path, line_no)
        meta = {k: v for k, v in row.items() if k not in (self.text_field, self.id_field) and v is not None}
        return _checked_text(text, self.path, line_no), doc_id, meta

    def _json(self, line: str, line_no: int) -> dict[str, Any]:
        try:
            row = json.loads(line)
        except RecursionError:
            raise CorpusError(f"{self.path}: line {line_no} nests JSON deeper than it can be read") from None
        except ValueError as exc:  # JSONDecodeError, an int of more than 4300 digits, a lone surrogate escape
            raise CorpusError(f"{self.path}: line {line_no} is not valid JSON "
                              f"({getattr(exc, 'msg', None) or str(exc).splitlines()[0]})") from None
        if not isinstance(row, dict):
            raise CorpusError(f"{self.path}: line {line_no} is not a JSON object")
        if json_depth(row, MAX_NESTING) > MAX_NESTING:
            raise CorpusError(f"{self.path}: line {line_no} nests JSON more than {MAX_NESTING} levels deep")
        try:
            json.dumps(row, ensure_ascii=False, allow_nan=False).encode("utf-8")
        except UnicodeEncodeError:
            raise CorpusError(f"{self.path}: line {line_no} holds a lone surrogate (an invalid \\ud8xx escape)") from None
        except ValueError as exc:  # NaN / Infinity, lone surrogates (\\ud800 escapes)
            raise CorpusError(f"{self.path}: line {line_no} holds a value the index cannot store "
                              f"({str(exc).splitlines()[0]})") from None
        return row


def read_corpus(path: str | Path, text_field: str = "text", id_field: str = "id",
                max_line_bytes: int = MAX_LINE_BYTES) -> Corpus:
    """A whole corpus in lists (small corpora; `index build` streams with CorpusReader instead)."""
    reader = CorpusReader(path, text_field, id_field, max_line_bytes)
    corpus, ids = Corpus(), []
    for doc in reader:
        corpus.texts.append(doc.text)
        corpus.metadata.append(doc.metadata)
        ids.append(doc.id)
    corpus.skipped_empty = reader.skipped_empty
    corpus.ids = ids if reader.has_ids else None
    return corpus


def _checked_text(text: str, path: Path, line_no: int) -> str:
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise CorpusError(f"{path}: line {line_no} holds a lone surrogate (an invalid \\ud8xx escape)") from None
    return text


def _ids_up_to(reader: CorpusReader, line: int) -> set[str]:
    """The ids of documents before `line` (read again: only when two ids share an 8-byte digest)."""
    out = set()
    for doc in CorpusReader(reader.path, reader.text_field, reader.id_field, reader.max_line_bytes):
        if doc.line >= line:
            break
        out.add(doc.id)
    return out
