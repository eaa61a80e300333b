"""What an app developer reads: warnings that point at their own line, errors that name the fix, help for every
option, `encode -` from stdin, empty queries refused (issue #17, "Exit codes and messages")."""
from __future__ import annotations

import argparse
import io
import json
import sys
import warnings

import numpy as np
import pytest
from stub_encoders import StubEncoder, make_docs

import edgeemb
from edgeemb import InputError, TruncationWarning, ZeroVectorWarning
from edgeemb.cli import main

LONG = "word " * 600  # > 512 tokens: truncated by the sentence (256) and the static (512) default alike


@pytest.fixture(scope="module")
def static_encoder():
    from edgeemb.paths import default_bundle_path

    path = default_bundle_path("default-static")
    if not (path / "edgeemb.json").is_file():
        pytest.skip("default-static not built: run `bash scripts/setup.sh --dev`")
    return edgeemb.load(path, threads=1)


def caught(fn, category):
    """Run fn; the warnings of `category` it raised."""
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        fn()
    return [x for x in w if issubclass(x.category, category)]


# -- warnings point at the caller's line -------------------------------------------------------------------
def test_truncation_warning_points_at_the_direct_encode_call(encoder):
    [w] = caught(lambda: encoder.encode([LONG, "short"]), TruncationWarning)
    assert w.filename == __file__, w.filename
    assert "1 of 2 texts were longer than 256 tokens" in str(w.message)


@pytest.mark.parametrize("call", ["encode_queries", "encode_documents", "single str", "window"])
def test_truncation_warning_points_here_through_every_encode_path(encoder, call, monkeypatch):
    from edgeemb.encode import batching

    monkeypatch.setattr(batching, "MAX_WINDOWS", 2)  # so the window path truncates a 600-word text cheaply
    fn = {"encode_queries": lambda: encoder.encode_queries([LONG]),
          "encode_documents": lambda: encoder.encode_documents([LONG]),
          "single str": lambda: encoder.encode(LONG),
          "window": lambda: encoder.encode([LONG], long_text="window")}[call]
    [w] = caught(fn, TruncationWarning)
    assert w.filename == __file__, (call, w.filename)


def test_truncation_warning_from_index_add_points_at_the_add_line(encoder, tmp_path):
    with edgeemb.Index.create(tmp_path / "ix", encoder) as ix:
        [w] = caught(lambda: ix.add([LONG, "a short one"]), TruncationWarning)
    assert w.filename == __file__, w.filename


def test_zero_vector_and_static_truncation_warnings_point_here(static_encoder):
    [z] = caught(lambda: static_encoder.encode(["", "a cat"]), ZeroVectorWarning)
    [t] = caught(lambda: static_encoder.encode_documents([LONG]), TruncationWarning)
    assert z.filename == __file__ and t.filename == __file__, (z.filename, t.filename)


def test_user_stacklevel_counts_the_package_frames():
    from edgeemb.callsite import user_stacklevel

    assert user_stacklevel() == 1  # called from outside edgeemb: the caller itself


# -- encode - reads stdin ------------------------------------------------------------------------------------
class Stdin(io.TextIOWrapper):
    """A stdin with bytes underneath, as a pipe gives."""


def pipe(monkeypatch, data: bytes) -> None:
    monkeypatch.setattr(sys, "stdin", Stdin(io.BytesIO(data), encoding="utf-8"))


def test_encode_dash_reads_one_text_per_line_from_stdin(encoder, default_bundle, monkeypatch, capsys):
    pipe(monkeypatch, "first text\r\nsecond, 第二\n\nlast without newline".encode())
    assert main(["encode", str(default_bundle), "-", "--threads", "1"]) == 0
    doc = json.loads(capsys.readouterr().out)
    got = np.array(doc["vectors"], dtype=np.float32)
    want = encoder.encode(["first text", "second, 第二", "", "last without newline"])
    assert got.shape == (4, 384) and np.allclose(got, want, atol=2e-6)


def test_encode_dash_with_empty_or_bad_stdin_is_a_clear_error(default_bundle, monkeypatch, capsys):
    pipe(monkeypatch, b"")
    assert main(["encode", str(default_bundle), "-"]) == 2
    assert "stdin held no lines" in capsys.readouterr().err
    pipe(monkeypatch, b"ok\n\xff\xfe bad\n")
    assert main(["encode", str(default_bundle), "-"]) == 2
    assert "stdin is not UTF-8" in capsys.readouterr().err


def test_encode_help_mentions_stdin(capsys):
    with pytest.raises(SystemExit):
        main(["encode", "--help"])
    assert "reads them from stdin" in " ".join(capsys.readouterr().out.split())


# -- help for every option -----------------------------------------------------------------------------------
def undocumented(parser: argparse.ArgumentParser, path: str) -> list[str]:
    out = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                out += undocumented(sub, f"{path} {name}")
        elif not action.help and not isinstance(action, argparse._HelpAction):
            out.append(f"{path} {'/'.join(action.option_strings) or action.dest}")
    return out


def test_every_option_of_every_command_has_help_text():
    from edgeemb.cli.main import build_parser

    assert undocumented(build_parser(), "edgeemb") == []


def test_bench_threads_and_demo_k_say_what_they_do(capsys):
    for argv, needle in ((["bench", "--help"], "--threads THREADS threads for"),
                         (["demo", "--help"], "-k K hits shown per query")):
        with pytest.raises(SystemExit):
            main(argv)
        assert needle in " ".join(capsys.readouterr().out.split()), argv


# -- corpus errors name the flag that fixes them --------------------------------------------------------------
def test_tsv_without_text_column_names_text_field(tmp_path, capsys):
    corpus = tmp_path / "c.tsv"
    corpus.write_text("source\tsentence\nx\ty\n", encoding="utf-8")
    assert main(["index", "build", "default", str(corpus), "-o", str(tmp_path / "ix")]) == 2
    err = capsys.readouterr().err
    assert "no 'text' column" in err and "--text-field" in err and not (tmp_path / "ix").exists()


# -- an empty query is an InputError naming it ----------------------------------------------------------------
@pytest.mark.parametrize("query, where", [("", "query is empty"), ("  \n\t", "query is empty"),
                                          (["fine", " "], r"queries\[1\] is empty")])
def test_index_search_refuses_an_empty_query(tmp_path, query, where):
    with edgeemb.Index.create(tmp_path / "ix", StubEncoder(dim=16)) as ix:
        ix.add(make_docs(20))
        with pytest.raises(InputError, match=where):
            ix.search(query)
        assert len(ix.search("apple banana", k=3)) == 3  # a real query still works


def test_hybrid_search_refuses_an_empty_query(tmp_path):
    with edgeemb.HybridRetriever(StubEncoder(dim=16, salt=1, name="c"), StubEncoder(dim=24, salt=2, name="f"),
                                 tmp_path / "hy") as h:
        h.add(make_docs(20))
        for q in ("", "   "):
            with pytest.raises(InputError, match="query is empty"):
                h.search(q)
        assert h.search("apple banana", k=3)


def test_cli_search_refuses_an_empty_query_before_loading(tmp_path, capsys):
    assert main(["search", str(tmp_path / "no-such-index"), " "]) == 2
    err = capsys.readouterr().err
    assert "query is empty" in err and "no-such-index" not in err  # said before the index is opened


# -- an empty bench report is never read as a result ------------------------------------------------------------
def test_recommend_refuses_a_latest_result_that_measured_nothing(tmp_path, monkeypatch, capsys):
    pytest.importorskip("edgeemb_bench")
    monkeypatch.setenv("EDGEEMB_BENCH_CACHE", str(tmp_path / "cache"))
    latest = tmp_path / "cache" / "latest.json"
    latest.parent.mkdir()
    latest.write_text(json.dumps({"schema": "edgeemb-bench/1", "quick": True, "bundles": [
        {"name": "x", "kind": "sentence", "single": None, "e2e": None, "errors": {"single": "no data"}}]}))
    assert main(["recommend"]) == 2
    err = capsys.readouterr().err
    assert "holds no measured bundle" in err and "choice:" not in err
