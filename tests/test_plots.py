"""Bench plots: groups coloured (end to end, encode-only, peers), a caption with quick/full and the load average,
and quality-vs-latency labels that never overlap (issue #17, "Plots")."""
from __future__ import annotations

import itertools

import pytest
from test_bench import fake_doc

pytest.importorskip("matplotlib")
from edgeemb_bench import plots


def test_caption_says_quick_and_load_and_flags_a_loaded_run():
    doc = fake_doc()
    assert plots.caption(doc).startswith("QUICK run, 2025-01-01T00:00:00, `edgeemb bench --quick`")
    assert "load average 1.0 at start on 2 CPUs" in plots.caption(doc) and "LOADED" not in plots.caption(doc)
    doc["quick"] = False
    doc["machine"] |= {"load_average": [10.4, 10.8, 10.9], "load_average_end": [5.0, 5.0, 6.9]}
    text = plots.caption(doc)
    assert text.startswith("full run") and "10.4 at start, 5.0 at end" in text and "LOADED" in text


def test_latency_series_are_grouped_end_to_end_then_encode_then_peers():
    groups = [g for g, _, _ in plots.latency_series(fake_doc())]
    assert groups == ["e2e", "e2e", "encode", "peer", "peer"]
    labels = [n for _, n, _ in plots.latency_series(fake_doc())]
    assert labels[2] == "edgeemb b" and labels[3:] == ["floor (bare session.run)", "fastembed 0.9.1 (same int8 file)"]


def test_latency_and_memory_boxes_take_their_group_colour_and_carry_the_caption():
    from matplotlib.colors import to_rgb

    doc = fake_doc()
    fig = plots.draw_latency(doc)
    ax = fig.axes[0]
    faces = [to_rgb(p.get_facecolor()) for p in ax.patches]
    want = [to_rgb(plots.GROUPS[g][1]) for g, _, _ in plots.latency_series(doc)]
    assert faces == want
    assert any(plots.caption(doc)[:40] in t.get_text() for t in fig.texts)
    mem = plots.draw_memory(doc)
    colours = {to_rgb(p.get_facecolor()) for p in mem.axes[0].patches}
    assert colours == {to_rgb(plots.GROUPS[g][1]) for g in ("e2e", "encode", "peer")}
    assert any("QUICK run" in t.get_text() for t in mem.texts)


def test_quality_labels_never_overlap_even_for_crowded_points():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    pts = [(3.3, 81.8), (3.35, 81.8), (3.6, 81.8), (3.6, 81.8), (3.7, 81.75), (8.3, 82.0), (0.09, 66.1)]
    ax.scatter(*zip(*pts))
    ax.set_xscale("log")
    texts = plots.place_labels(fig, ax, pts, [str(i + 1) for i in range(len(pts))])
    fig.canvas.draw()
    boxes = [t.get_window_extent(fig.canvas.get_renderer()) for t in texts]
    assert not [(a, b) for a, b in itertools.combinations(range(len(boxes)), 2) if boxes[a].overlaps(boxes[b])]
    plt.close(fig)


def test_quality_plot_names_points_in_a_legend_with_their_values():
    quality = {"minilm": {("sts", "stsb_en", "spearman"): 82.0}, "static": {("sts", "stsb_en", "spearman"): 70.0}}
    doc = fake_doc()
    fig = plots.draw_quality(doc, quality, "similarity")
    legend = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert legend[0].startswith("1  ") and any("minilm (2.5 ms, 82.0)" in x for x in legend)
    assert "Pareto front" in legend


def test_caption_hides_this_machines_paths():
    from edgeemb_bench.cache import CHECKOUT

    doc = fake_doc() | {"command": f"edgeemb bench {CHECKOUT}/.cache/b"}
    assert "<checkout>/.cache/b" in plots.caption(doc) and str(CHECKOUT) not in plots.caption(doc)
