"""Static bundle study (docs/results/static.md): ONNX vs numpy backend, throughput vs model2vec, quality.

    python -m edgeemb_bench.studies.static backends BUNDLE            # ONNX Gather graph vs numpy gather, 1 thread
    python -m edgeemb_bench.studies.static throughput BUNDLE M2V_DIR  # sentences/s, p50, peak RSS, 1 core each
    python -m edgeemb_bench.studies.static quality --static B --model2vec M2V_DIR [--sentence default]
    python -m edgeemb_bench.studies.static words BUNDLE...            # analogy + word similarity (eval suite)
    python -m edgeemb_bench.studies.static compose BUNDLE...          # CA8 + cwe with words composed of characters
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
from edgeemb_bench import data, probes
from edgeemb_bench.duels import Contender, side_by_side
from edgeemb_bench.harness import one_thread, percentile, ratio, rotations, round_ratios, spread, summarize


def onnx_static_graph(model, path: Path) -> None:
    """The same maths as edgeemb.static.StaticModel.run as an ONNX graph: Gather + weighted mean + L2 norm."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    V, dim, unk = model.vocab_size, model.manifest.dim, model.unk_id
    table = np.asarray(model.table)
    inits = [numpy_helper.from_array(table, "table"), numpy_helper.from_array(model.factor, "factor"),
             numpy_helper.from_array(np.array(V - 1, np.int64), "vmax"),
             numpy_helper.from_array(np.array(V, np.int64), "vsize"),
             numpy_helper.from_array(np.array(unk, np.int64), "unk"),
             numpy_helper.from_array(np.array(1, np.int64), "one"),
             numpy_helper.from_array(np.array([1], np.int64), "axis1"),
             numpy_helper.from_array(np.array(1.0, np.float32), "onef"),
             numpy_helper.from_array(np.array(1e-12, np.float32), "eps")]
    n = helper.make_node
    nodes = [
        n("Min", ["input_ids", "vmax"], ["ids"]),
        n("Gather", ["table", "ids"], ["rows_q"]),
        n("Cast", ["rows_q"], ["rows"], to=TensorProto.FLOAT),
        n("Gather", ["factor", "ids"], ["f"]),
        n("Equal", ["attention_mask", "one"], ["m1"]),
        n("Equal", ["input_ids", "unk"], ["isunk"]),
        n("Not", ["isunk"], ["notunk"]),
        n("Less", ["input_ids", "vsize"], ["inv"]),
        n("And", ["m1", "notunk"], ["m2"]),
        n("And", ["m2", "inv"], ["m3"]),
        n("Cast", ["m3"], ["valid"], to=TensorProto.FLOAT),
        n("Mul", ["f", "valid"], ["w"]),
        n("Unsqueeze", ["w", "axis1"], ["w3"]),
        n("MatMul", ["w3", "rows"], ["s3"]),
        n("Squeeze", ["s3", "axis1"], ["summed"]),
        n("ReduceSum", ["valid", "axis1"], ["count"], keepdims=1),
        n("Max", ["count", "onef"], ["count1"]),
        n("Div", ["summed", "count1"], ["mean"]),
        n("ReduceL2", ["mean"], ["norm"], axes=[1], keepdims=1),
        n("Max", ["norm", "eps"], ["norm1"]),
        n("Div", ["mean", "norm1"], ["sentence_embedding"]),
    ]
    graph = helper.make_graph(
        nodes, "static", [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "seq"]),
                          helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "seq"])],
        [helper.make_tensor_value_info("sentence_embedding", TensorProto.FLOAT, ["batch", dim])], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))


def cmd_backends(args) -> None:
    """Single-query latency and batch throughput of the same static bundle under both backends, in rotating
    rounds on one pinned core (each round: every query, one batch call, 2,000 bare backend calls)."""
    import tempfile

    import edgeemb
    from edgeemb.encode.backend import OnnxBackend
    from edgeemb.encode.encoder import Encoder

    one_thread()
    enc_np = edgeemb.load(args.bundle, threads=1)
    with tempfile.TemporaryDirectory() as tmp:
        onnx_static_graph(enc_np.backend, Path(tmp) / "static.onnx")
        backend = OnnxBackend(Path(tmp) / "static.onnx", 1, normalized=True)  # the graph ends in an L2 norm
    enc_onnx = Encoder(enc_np.path, enc_np.manifest, backend, enc_np.tokenizer, 1)
    texts = data.sentences("en_corpus", 0, args.n)
    queries = texts[:2000]
    a, b = enc_np.encode(queries), enc_onnx.encode(queries)  # also the warm-up: pages the table in
    result = {"bundle": enc_np.name, "max_abs_diff": float(np.abs(a - b).max()), "n": len(texts),
              "rounds": args.rounds, "machine": probes.machine()}
    encoders = {"numpy": enc_np, "onnx": enc_onnx}
    batch = next(enc_np.tokenizer.batches(enc_np.tokenizer.tokenize([queries[0]]), 1, 1 << 20))
    feed = {"input_ids": batch.input_ids, "attention_mask": batch.attention_mask}
    p50, p95, run_only, tput = ({k: [] for k in encoders} for _ in range(4))
    for order in rotations(list(encoders), args.rounds):
        for label in order:
            enc = encoders[label]
            ms = timed([lambda q=q, enc=enc: enc.encode(q) for q in queries])
            p50[label].append(percentile(ms, 50))
            p95[label].append(percentile(ms, 95))
            t = time.perf_counter()
            enc.encode(texts, batch_size=args.batch_size)
            tput[label].append(len(texts) / (time.perf_counter() - t))
            bare = [lambda enc=enc: enc.backend.run(["sentence_embedding"], feed)] * 2000
            run_only[label].append(percentile(timed(bare), 50))
    for label in encoders:
        result[label] = {"query_p50_ms": spread(p50[label]), "query_p95_ms": spread(p95[label]),
                         "run_only_p50_ms": spread(run_only[label]), "batch_sentences_per_s": spread(tput[label])}
    result["onnx_over_numpy_throughput"] = spread(round_ratios(tput["onnx"], tput["numpy"]))
    print(json.dumps(result, indent=2))


def timed(calls: list) -> list[float]:
    """ms of each call, in order."""
    out = []
    for fn in calls:
        t = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t) * 1e3)
    return out


def cmd_throughput(args) -> None:
    """edgeemb static bundle vs model2vec, each in a worker pinned to one core, interleaved rounds on the same
    sentences after a warm-up pass over all of them; edgeemb at the Encoder's default batch (32 texts, capped in
    padded tokens), model2vec at its own (1024) with use_multiprocessing=False."""
    texts = data.sentences("en_corpus", 0, args.n)
    contenders = [Contender("edgeemb", "edgeemb", {"bundle": args.bundle, "threads": 1}, batch_size=32),
                  Contender("model2vec", "model2vec", {"path": args.model2vec}, batch_size=args.batch_size)]
    rows, failed = side_by_side(contenders, texts[:args.queries], args.rounds, {"natural": texts}, texts,
                                label="static throughput")
    if failed:
        sys.exit(f"static throughput: {failed}")
    ours, theirs = rows["edgeemb"], rows["model2vec"]
    out = {"sentences": len(texts), "rounds": args.rounds, "machine": probes.machine(), "engines": {
        name: {"load_s": r["load_s"], "sentences_per_s": r["throughput"]["natural"],
               "sentences_per_s_spread": spread(r["throughput_rounds"]["natural"]),
               "single": summarize(r["latency_samples"]), "single_p50_spread": spread(r["latency_round_p50"]),
               "peak_rss_mb": r["peak_rss_mb"]} for name, r in rows.items()},
        "throughput_ratio": ratio(ours["throughput"]["natural"], theirs["throughput"]["natural"]),
        "throughput_ratio_spread": spread(round_ratios(ours["throughput_rounds"]["natural"],
                                                       theirs["throughput_rounds"]["natural"]))}
    print(json.dumps(out, indent=2))


def cmd_quality(args) -> None:
    """STS-B (en), LCQMC and SciFact for the static bundle, model2vec and the sentence bundle."""
    import edgeemb
    from edgeemb.eval import tasks

    models = {"edgeemb static": edgeemb.load(args.static)}
    if args.model2vec:
        os.environ["HF_HUB_OFFLINE"] = "1"
        from model2vec import StaticModel

        models["model2vec"] = StaticModel.from_pretrained(args.model2vec)
    if args.sentence:
        models["sentence"] = edgeemb.load(None if args.sentence == "default" else args.sentence)
    out = {}
    for label, model in models.items():
        t = time.perf_counter()
        res = tasks.sts(model, langs=("en",)) + tasks.pair(model) + tasks.retrieval(model)
        out[label] = {r.dataset: {k: round(v, 2) for k, v in r.metrics.items()} for r in res}
        out[label]["seconds"] = round(time.perf_counter() - t, 1)
        print(label, json.dumps(out[label]), file=sys.stderr, flush=True)
    print(json.dumps(out, indent=2))


def cmd_words(args) -> None:
    """Analogy (3CosAdd, 3CosMul, coverage) and word similarity (Spearman, coverage) with the eval suite."""
    import edgeemb
    from edgeemb.eval import tasks

    out = {}
    for bundle in args.bundles:
        enc = edgeemb.load(bundle)
        res = tasks.analogy(enc) + tasks.wordsim(enc)
        out[enc.name] = {r.dataset: {**{k: round(v, 2) for k, v in r.metrics.items()},
                                     "coverage": round(r.coverage or 0.0, 4), "n": r.n} for r in res}
    print(json.dumps(out, indent=2))


def cmd_compose(args) -> None:
    """Word tasks for a character vocabulary: a word's vector is its encode() (SIF mean of its characters).

    The eval suite looks words up exactly, so a character model covers ~1% of CA8 and wordsim-240/297;
    composing words from characters (what encode() does) covers them all. Analogy candidates: every word of
    the analogy files, composed the same way; the three query words are excluded (3CosAdd)."""
    import edgeemb
    from edgeemb.eval import data as eval_data
    from edgeemb.eval.metrics import analogy_3cosadd, spearman

    out = {}
    for bundle in args.bundles:
        enc = edgeemb.load(bundle)
        res = {}
        for name in ("cwe_240", "cwe_297"):
            pairs = eval_data.load_wordsim(name)
            A, B = enc.encode([p[0] for p in pairs]), enc.encode([p[1] for p in pairs])
            ok = (np.abs(A).sum(1) > 0) & (np.abs(B).sum(1) > 0)
            cos = (A * B).sum(1)[ok]
            res[name] = {"spearman": round(100 * spearman(cos, [p[2] for p, k in zip(pairs, ok) if k]), 2),
                         "coverage": round(float(ok.mean()), 4), "n": len(pairs)}
        questions = eval_data.load_analogy("ca8")
        vocab = sorted({w for q in questions for w in q[1:]})
        E = enc.encode(vocab)
        known = np.abs(E).sum(1) > 0
        pos = {w: i for i, w in enumerate(vocab)}
        ok = [q for q in questions if all(known[pos[w]] for w in q[1:])]
        a, b, c, d = (np.array([pos[q[j]] for q in ok]) for j in range(1, 5))
        hit = analogy_3cosadd(E, a, b, c) == d
        res["ca8"] = {"3cosadd": round(100 * float(hit.mean()), 2), "coverage": round(len(ok) / len(questions), 4),
                      "n": len(questions), "candidates": len(vocab)}
        out[enc.name] = res
    print(json.dumps(out, indent=2))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="studies.static", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("backends")
    b.add_argument("bundle")
    b.add_argument("--n", type=int, default=20000)
    b.add_argument("--batch-size", type=int, default=32)
    b.add_argument("--rounds", type=int, default=5)
    b.set_defaults(func=cmd_backends)
    t = sub.add_parser("throughput")
    t.add_argument("bundle")
    t.add_argument("model2vec")
    t.add_argument("--n", type=int, default=50000)
    t.add_argument("--queries", type=int, default=500, help="single-query latency on the first N sentences")
    t.add_argument("--rounds", type=int, default=5)
    t.add_argument("--batch-size", type=int, default=1024, help="model2vec's batch size (its default)")
    t.set_defaults(func=cmd_throughput)
    q = sub.add_parser("quality")
    q.add_argument("--static", required=True)
    q.add_argument("--model2vec", default=None)
    q.add_argument("--sentence", default=None, help="'default' or a bundle path")
    q.set_defaults(func=cmd_quality)
    w = sub.add_parser("words")
    w.add_argument("bundles", nargs="+")
    w.set_defaults(func=cmd_words)
    c = sub.add_parser("compose")
    c.add_argument("bundles", nargs="+")
    c.set_defaults(func=cmd_compose)
    args = p.parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    main()
