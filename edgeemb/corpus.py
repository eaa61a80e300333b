"""Read a corpus file: .txt (one document per line), .jsonl (a text field), .tsv (a header naming the text column)."""
from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path

from .errors import CorpusError

csv.field_size_limit(1 << 24)


@dataclass
class Corpus:
    """Documents with optional ids and metadata, plus how many empty lines were skipped."""

    texts: list[str] = field(default_factory=list)
    ids: list[str] | None = None
    metadata: list[dict] = field(default_factory=list)
    skipped_empty: int = 0


def read_corpus(path: str | Path, text_field: str = "text", id_field: str = "id") -> Corpus:
    """Read a corpus; undecodable bytes, bad JSON or a missing text column are errors naming the line."""
    path = Path(path)
    if not path.is_file():
        raise CorpusError(f"corpus not found: {path}")
    suffix = path.suffix.lower()
    if suffix not in (".txt", ".jsonl", ".tsv"):
        raise CorpusError(f"{path}: unknown corpus format {suffix!r} (use .txt, .jsonl or .tsv)")
    try:
        raw = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = path.read_bytes()[: exc.start].count(b"\n") + 1
        raise CorpusError(f"{path}: line {line} is not valid UTF-8 (byte {exc.start})") from None
    lines = raw.splitlines()
    if suffix == ".txt":
        docs = [(i, {text_field: t}) for i, t in enumerate(lines, 1)]
    elif suffix == ".jsonl":
        docs = []
        for i, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise CorpusError(f"{path}: line {i} is not valid JSON ({exc.msg})") from None
            if not isinstance(row, dict):
                raise CorpusError(f"{path}: line {i} is not a JSON object")
            docs.append((i, row))
    else:
        reader = csv.DictReader(lines, delimiter="\t", quoting=csv.QUOTE_NONE)
        if not reader.fieldnames or text_field not in reader.fieldnames:
            raise CorpusError(f"{path}: header {reader.fieldnames} has no {text_field!r} column")
        docs = [(i, row) for i, row in enumerate(reader, 2)]
    corpus = Corpus()
    ids: list[str] = []
    for line_no, row in docs:
        text = row.get(text_field)
        if not isinstance(text, str):
            raise CorpusError(f"{path}: line {line_no} has no string field {text_field!r}")
        if not text.strip():
            corpus.skipped_empty += 1
            continue
        corpus.texts.append(text)
        if row.get(id_field) is not None:
            ids.append(str(row[id_field]))
        corpus.metadata.append({k: v for k, v in row.items() if k not in (text_field, id_field) and v is not None})
    if ids and len(ids) != len(corpus.texts):
        raise CorpusError(f"{path}: some documents have an {id_field!r} and some do not")
    corpus.ids = ids or None
    return corpus
