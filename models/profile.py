#!/usr/bin/env python3
"""Where a classifier's time goes, in tract and in onnxruntime, per operator type.

    profile.py MODEL_DIR [--runs N]

Runs the model's ONNX file single-threaded on a random input of the manifest's shape with
tract (PyPI `tract`, the Python bindings of the Rust crates crates/classify links; its
`profile_json`) and onnxruntime (its built-in profiler), and prints for each: the median
wall time of N runs, then per operator type the time per run, its share and, for tract,
the arithmetic rate from its FMA counts. tract's operator names are those of its optimised
plan (convolutions become `OptMatMul` plus im2col `Im2col`/`LazyIm2col`), onnxruntime's
are its kernels (`Conv`, `FusedConv`, ...); compare the totals and the shares.
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import reference_scores as rs  # noqa: E402


def tract_profile(m, x, runs):
    import tract
    model = tract.onnx().load(str(m.path))
    model.set_input_fact(0, ",".join(map(str, m.shape)) + ",f32")
    plan = model.into_model().into_runnable()
    for _ in range(3):
        plan.run([x])
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        plan.run([x])
        times.append(time.perf_counter() - t)
    prof = json.loads(plan.profile_json([x]))
    per_op = collections.defaultdict(lambda: [0.0, 0])
    for node in prof["nodes"]:
        s = node.get("secs_per_iter")
        if s is None:
            continue
        per_op[node["op_name"]][0] += s
        fma = node.get("cost", {}).get("FMA(F32)")
        if fma:
            per_op[node["op_name"]][1] += int(fma)
    return statistics.median(times), per_op


def ort_profile(m, x, runs):
    import onnxruntime as ort
    with tempfile.TemporaryDirectory() as tmp:
        o = ort.SessionOptions()
        o.intra_op_num_threads = 1
        o.inter_op_num_threads = 1
        plain = ort.InferenceSession(str(m.path), o, providers=["CPUExecutionProvider"])
        feed = {m.input_name: x}
        for _ in range(3):
            plain.run(None, feed)
        times = []
        for _ in range(runs):
            t = time.perf_counter()
            plain.run(None, feed)
            times.append(time.perf_counter() - t)
        o.enable_profiling = True
        o.profile_file_prefix = os.path.join(tmp, "ort")
        prof_sess = ort.InferenceSession(str(m.path), o, providers=["CPUExecutionProvider"])
        for _ in range(runs):
            prof_sess.run(None, feed)
        events = json.load(open(prof_sess.end_profiling()))
    per_op = collections.defaultdict(lambda: [0.0, 0])
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            per_op[e["args"]["op_name"]][0] += e["dur"] / 1e6 / runs
    return statistics.median(times), per_op


def table(title, median, per_op):
    total = sum(v[0] for v in per_op.values())
    print(f"\n{title}: median {median * 1e3:.1f} ms per frame (profiled ops sum {total * 1e3:.1f} ms)")
    print(f"{'operator':<22}{'ms/frame':>10}{'share':>8}{'GFMA/s':>9}")
    for op, (secs, fma) in sorted(per_op.items(), key=lambda kv: -kv[1][0]):
        if secs / total < 0.002:
            continue
        rate = f"{fma / secs / 1e9:.1f}" if fma and secs else ""
        print(f"{op:<22}{secs * 1e3:>10.2f}{secs / total * 100:>7.1f}%{rate:>9}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model_dir")
    ap.add_argument("--runs", type=int, default=20)
    a = ap.parse_args()
    m = rs.load_manifest(a.model_dir)
    x = (np.random.default_rng(0).random(m.shape, dtype=np.float32) * 255).astype(np.float32)
    tm, tp = tract_profile(m, x, a.runs)
    om, op = ort_profile(m, x, a.runs)
    fma = sum(v[1] for v in tp.values())
    print(f"{m.name}: tract / onnxruntime = {tm / om:.2f}x (single thread, median of {a.runs}); "
          f"{fma / 1e9:.2f} G multiply-adds per frame (tract's count): tract {fma / tm / 1e9:.1f}, "
          f"onnxruntime {fma / om / 1e9:.1f} GFMA/s")
    table("tract", tm, tp)
    table("onnxruntime", om, op)


if __name__ == "__main__":
    main()
