"""The CLI end to end on the default bundle: info, encode, index build, search, demo, and clear errors."""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from edgeemb.cli import main


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edgeemb", *args], capture_output=True, text=True, timeout=300)


def test_info_encode_build_search(default_bundle, tmp_path, capsys):
    assert main(["info", str(default_bundle)]) == 0
    assert "checksums ok" in capsys.readouterr().out

    assert main(["encode", str(default_bundle), "hello world", "你好"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["dim"] == 384 and len(out["vectors"]) == 2 and len(out["vectors"][0]) == 384

    corpus = tmp_path / "docs.tsv"
    corpus.write_text("id\ttext\tlang\na\tHow to bake sourdough bread at home\ten\n"
                      "b\tThe central bank raised interest rates\ten\nc\t今天天气很好\tzh\n", encoding="utf-8")
    assert main(["index", "build", str(default_bundle), str(corpus), "-o", str(tmp_path / "idx")]) == 0
    assert "indexed 3 documents" in capsys.readouterr().out

    assert main(["search", str(tmp_path / "idx"), "bread recipe", "-k", "10", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert [h["id"] for h in result["hits"]][0] == "a" and len(result["hits"]) == 3
    assert result["hits"][0]["metadata"] == {"lang": "en"} and result["latency_ms"] > 0

    # building again without --force refuses and keeps the index
    assert main(["index", "build", str(default_bundle), str(corpus), "-o", str(tmp_path / "idx")]) == 2
    assert "already holds an index" in capsys.readouterr().err


@pytest.mark.parametrize("name, content, message", [
    ("bad.txt", b"ok line\n\xff\xfe broken\n", "line 2 is not valid UTF-8"),
    ("bad.jsonl", b'{"text": "fine"}\n{"text": \n', "line 2 is not valid JSON"),
    ("bad.tsv", b"title\tbody\nx\ty\n", "no 'text' column"),
    ("bad.csv", b"text\nx\n", "unknown corpus format"),
])
def test_bad_corpus_files_give_one_line_errors(default_bundle, tmp_path, capsys, name, content, message):
    path = tmp_path / name
    path.write_bytes(content)
    assert main(["index", "build", str(default_bundle), str(path), "-o", str(tmp_path / "idx")]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err


def test_missing_bundle_and_index_errors(tmp_path, capsys):
    assert main(["info", str(tmp_path / "none")]) == 2
    assert "bundle not found" in capsys.readouterr().err
    assert main(["search", str(tmp_path), "q"]) == 2
    assert "no index at" in capsys.readouterr().err


DEMO_TOPICS = ["cooking", "travel", "technology", "sports", "finance", "health", "cooking", "travel"]


def demo_top_topics(stdout: str) -> list[str]:
    """The topic of each demo query's first hit, in query order (hit lines: score, id, text)."""
    lines = stdout.splitlines()
    return [lines[i + 1].split()[1].split("-")[1] for i, line in enumerate(lines) if line.startswith("query: ")]


def test_demo_prints_hits_latency_and_rss(default_bundle):
    out = run("demo")
    assert out.returncode == 0, out.stderr
    assert "indexed 240 sample documents" in out.stdout
    topics = demo_top_topics(out.stdout)
    assert len(topics) == len(DEMO_TOPICS)
    # every English query's top hit is in its topic (MiniLM is English-only: the Chinese ones are not checked)
    assert topics[:5] == DEMO_TOPICS[:5], topics
    rss = re.search(r"median ([\d.]+) ms, max ([\d.]+) ms; peak RSS (\d+) MB", out.stdout)
    assert rss and 0 < float(rss[1]) <= float(rss[2]) and 50 < int(rss[3]) < 2000, out.stdout


def test_console_script_is_installed():
    script = Path(sys.executable).parent / "edgeemb"
    assert script.is_file() and os.access(script, os.X_OK)
    assert subprocess.run([str(script), "--version"], capture_output=True, text=True).stdout.startswith("edgeemb ")


def test_info_reads_a_packed_archive(default_bundle, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("EDGEEMB_HOME", str(tmp_path / "home"))
    assert main(["pack", str(default_bundle), "-o", str(tmp_path / "b.tar")]) == 0
    capsys.readouterr()
    assert main(["info", str(tmp_path / "b.tar")]) == 0
    out = capsys.readouterr().out
    assert "checksums ok" in out and str(tmp_path / "home") in out
