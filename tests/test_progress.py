"""edgeemb.progress: a tqdm bar on a terminal (ETA, elapsed, rate in the caller's unit), plain lines elsewhere."""
from __future__ import annotations

import io
import re
import sys

import pytest
from stub_encoders import StubEncoder, make_docs
from tqdm import tqdm

from edgeemb import progress
from edgeemb.progress import Progress


class Terminal(io.StringIO):
    """A stderr that says it is a terminal."""

    def isatty(self) -> bool:
        return True


def on_terminal(monkeypatch) -> Terminal:
    """Point sys.stderr at a Terminal (inside the test: pytest's capture resets stderr between phases)."""
    stream = Terminal()
    monkeypatch.setattr(sys, "stderr", stream)
    return stream


def test_terminal_gets_a_tqdm_bar_with_eta_elapsed_and_rate(monkeypatch):
    terminal = on_terminal(monkeypatch)
    with Progress(100, "index ix", True, "docs") as bar:
        assert isinstance(bar._bar, tqdm)
        for _ in range(4):
            bar.update(25)
    text = terminal.getvalue()
    assert "\r" in text and text.endswith("\n")
    final = text.rstrip("\n").split("\r")[-1]
    assert final.startswith("index ix: 100%") and "100/100" in final
    assert re.search(r"\[\d\d:\d\d<\d\d:\d\d, [\d.]+docs/s\]", final), final  # elapsed<ETA, rate in docs/s


def test_bytes_are_scaled_to_megabytes_per_second(monkeypatch):
    terminal = on_terminal(monkeypatch)
    with Progress(14_366_671, "pack b.tar", True, "B") as bar:
        bar.update(14_366_671)
    final = terminal.getvalue().rstrip("\n").split("\r")[-1]
    assert "14.4M/14.4M" in final and re.search(r"[\d.]+[kMGT]?B/s", final), final
    assert "14366671" not in final and "14,366,671" not in final


def test_off_a_terminal_there_are_no_carriage_returns_only_plain_lines(capsys, monkeypatch):
    monkeypatch.setattr(progress, "PLAIN_EVERY_S", 0.0)  # a line at every update
    with Progress(1000, "encode m", True, "texts") as bar:
        assert bar._bar is None
        for _ in range(4):
            bar.update(250)
    err = capsys.readouterr().err
    assert "\r" not in err
    lines = err.splitlines()
    assert len(lines) == 4  # three intermediate lines (the last update is the final line's) and the final one
    assert re.fullmatch(r"encode m: 25% 250/1,000 texts, \d\d:\d\d elapsed, ETA \d\d:\d\d, [\d,.]+ texts/s",
                        lines[0]), lines[0]
    assert re.fullmatch(r"encode m: 100% 1,000/1,000 texts, \d\d:\d\d elapsed, [\d,.]+ texts/s", lines[-1])


def test_off_a_terminal_a_quick_job_prints_one_final_line(capsys):
    with Progress(3_000_000, "unpack b.tar", True, "B") as bar:
        for _ in range(3000):
            bar.update(1000)
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and re.fullmatch(r"unpack b\.tar: 100% 3\.00MB/3\.00MB, \d\d:\d\d elapsed, "
                                            r"[\d.]+[kMGT]?B/s", lines[0]), lines


def test_disabled_or_empty_work_writes_nothing(capsys, monkeypatch):
    terminal = on_terminal(monkeypatch)
    for total, enabled in ((10, False), (0, True)):
        with Progress(total, "x", enabled) as bar:
            bar.update(5)
        assert bar.done == 5
    monkeypatch.undo()
    assert terminal.getvalue() == "" and capsys.readouterr().err == ""


def test_close_twice_and_exception_leave_one_final_line(capsys):
    bar = Progress(10, "job", True, "docs")
    with pytest.raises(RuntimeError), bar:
        bar.update(3)
        raise RuntimeError("interrupted")
    bar.close()
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("job: 30% 3/10 docs") and "ETA" in lines[0]


def test_index_add_reports_documents_per_second(tmp_path, capsys):
    from edgeemb import Index

    with Index.create(tmp_path / "ix", StubEncoder(dim=16)) as ix:
        ix.add(make_docs(40), show_progress=True, batch_size=16)
    err = capsys.readouterr().err
    assert re.search(r"index ix: 100% 40/40 docs, .* docs/s", err) and "\r" not in err


def test_importing_the_runtime_does_not_import_tqdm():
    import subprocess

    code = "import sys, edgeemb, edgeemb.encode.encoder, edgeemb.search.index; print('tqdm' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"  # tqdm costs ~35 ms of import: loaded only when a bar is shown
