"""`edgeemb demo` with the multilingual default: the Chinese queries go to multilingual-e5-small when it is built
(each top hit in its topic), and the demo says so and falls back to the English default when it is not."""
from __future__ import annotations

import subprocess
import sys

import pytest
from test_cli import DEMO_TOPICS, demo_top_topics


def multilingual_or_skip():
    import edgeemb
    from edgeemb.cli.demo import MULTILINGUAL
    from edgeemb.errors import BundleError

    try:
        return edgeemb.load(MULTILINGUAL, threads=1)
    except (BundleError, KeyError, ValueError, OSError) as exc:
        pytest.skip(f"multilingual default not built ({exc}): run `edgeemb setup`")


def test_chinese_queries_hit_their_topic_with_the_multilingual_default(default_bundle):
    multi = multilingual_or_skip()
    out = subprocess.run([sys.executable, "-m", "edgeemb", "demo"], capture_output=True, text=True, timeout=600,
                         check=False)
    assert out.returncode == 0, out.stderr
    topics = demo_top_topics(out.stdout)
    assert topics == DEMO_TOPICS, topics  # English (MiniLM) and Chinese (multilingual) alike
    chinese = [line for line in out.stdout.splitlines() if line.startswith("query: ") and "如何" in line]
    assert chinese and multi.name in chinese[0], chinese
    lines = out.stdout.splitlines()
    cross = [lines[i + 1].split()[1] for i, line in enumerate(lines) if line.startswith("cross-lingual: ")]
    assert len(cross) == 2 and cross[0].startswith("zh-health") and cross[1].startswith("en-technology"), cross


def test_demo_falls_back_with_a_note_when_the_multilingual_default_is_absent(default_bundle, tmp_path,
                                                                              monkeypatch, capsys):
    from edgeemb.cli import demo

    monkeypatch.setattr(demo, "MULTILINGUAL", str(tmp_path / "not-built"))
    monkeypatch.setattr(demo, "run_static_demo", lambda: None)
    assert demo.run_demo(None, 1) == 0
    out = capsys.readouterr().out
    assert "multilingual default not built" in out and "edgeemb setup" in out
    assert len(demo_top_topics(out)) == len(DEMO_TOPICS)


def test_is_chinese():
    from edgeemb.cli.demo import is_chinese

    assert is_chinese("如何降低血压") and is_chinese("iPhone 电池") and not is_chinese("how do I keep pasta")
