#!/usr/bin/env python3
"""Where a classifier's time goes, in tract and in onnxruntime, per operator type.

    profile.py MODEL_DIR [--runs N] [--attempts]

Runs the model's ONNX file single-threaded on a random input of the manifest's shape with
tract (PyPI `tract`, the Python bindings of the Rust crates crates/classify links; its
`profile_json`) and onnxruntime (its built-in profiler), and prints for each: the median
wall time of N runs, then per operator type the time per run, its share and, for tract,
the arithmetic rate from its FMA counts. tract's operator names are those of its optimised
plan (convolutions become `OptMatMul` plus im2col `Im2col`/`LazyIm2col`), onnxruntime's
are its kernels (`Conv`, `FusedConv`, ...); compare the totals and the shares.

--attempts also measures ways of closing the gap, each against the same input, with the
largest difference of its output from tract's f32 output:
  - tract with its f32_to_f16 transform (half-precision weights and activations);
  - tract on the graph onnxruntime optimises offline (level "basic": constant folding and
    node fusions that keep standard ONNX operators);
  - an int8 model (onnxruntime.quantization.quantize_static, QDQ format, calibrated on 8
    random inputs), in tract and in onnxruntime.
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


def timed(run, runs):
    for _ in range(3):
        run()
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        run()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def tract_plan(path, shape, transform=None):
    import tract
    model = tract.onnx().load(str(path))
    model.set_input_fact(0, ",".join(map(str, shape)) + ",f32")
    typed = model.into_model()
    if transform:
        typed.transform(transform)
    return typed.into_runnable()


def ort_session(path):
    import onnxruntime as ort
    o = ort.SessionOptions()
    o.intra_op_num_threads = 1
    o.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), o, providers=["CPUExecutionProvider"])


def out_of(result):
    v = result[0]
    return np.asarray(v.to_numpy() if hasattr(v, "to_numpy") else v, dtype=np.float32)


def tract_attempt(rows, name, make, feeds, ref, runs):
    """Times tract plan `make()` on the first of `feeds` it accepts; a failure is a row."""
    try:
        plan = make()
        for i, feed in enumerate(feeds):
            try:
                plan.run([feed])
                break
            except Exception:  # noqa: BLE001 - try the next input type
                if i == len(feeds) - 1:
                    raise
        rows.append((name, timed(lambda: plan.run([feed]), runs),
                     float(np.abs(out_of(plan.run([feed])) - ref).max())))
    except Exception as e:  # noqa: BLE001 - report, do not hide
        rows.append((f"{name}: failed ({str(e).splitlines()[0][:60]})", float("nan"), float("nan")))


def attempts(m, x, runs):
    import onnxruntime as ort
    from onnxruntime import quantization as q

    base = tract_plan(m.path, m.shape)
    ref = out_of(base.run([x]))
    rows = [("tract f32 (as shipped)", timed(lambda: base.run([x]), runs), 0.0)]
    sess = ort_session(m.path)
    feed = {m.input_name: x}
    rows.append(("onnxruntime f32", timed(lambda: sess.run(None, feed), runs),
                 float(np.abs(out_of(sess.run(None, feed)) - ref).max())))
    # The transform may or may not turn the input to f16.
    tract_attempt(rows, "tract f32_to_f16", lambda: tract_plan(m.path, m.shape, "f32_to_f16"),
                  [x.astype(np.float16), x], ref, runs)
    with tempfile.TemporaryDirectory() as tmp:
        opt = os.path.join(tmp, "ort-basic.onnx")
        o = ort.SessionOptions()
        o.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        o.optimized_model_filepath = opt
        ort.InferenceSession(str(m.path), o, providers=["CPUExecutionProvider"])
        tract_attempt(rows, "tract on onnxruntime's basic-optimised graph",
                      lambda: tract_plan(opt, m.shape), [x], ref, runs)

        class Random(q.CalibrationDataReader):
            def __init__(self):
                rng = np.random.default_rng(1)
                self.items = iter([{m.input_name: (rng.random(m.shape, dtype=np.float32) * 255)} for _ in range(8)])

            def get_next(self):
                return next(self.items, None)

        pre = os.path.join(tmp, "pre.onnx")
        int8 = os.path.join(tmp, "int8.onnx")
        try:
            q.quant_pre_process(str(m.path), pre)
        except Exception:  # noqa: BLE001 - pre-processing is optional
            pre = str(m.path)
        q.quantize_static(pre, int8, Random(), quant_format=q.QuantFormat.QDQ,
                          activation_type=q.QuantType.QUInt8, weight_type=q.QuantType.QInt8)
        s8 = ort_session(int8)
        rows.append(("onnxruntime int8 (QDQ)", timed(lambda: s8.run(None, feed), runs),
                     float(np.abs(out_of(s8.run(None, feed)) - ref).max())))
        tract_attempt(rows, "tract int8 (QDQ)", lambda: tract_plan(int8, m.shape), [x], ref, runs)
    print(f"\nattempts, {m.name}, single thread, median of {runs} runs:")
    print(f"{'variant':<48}{'ms/frame':>10}{'vs ort f32':>11}{'max |diff|':>12}")
    ort_ms = rows[1][1]
    for name, secs, diff in rows:
        print(f"{name:<48}{secs * 1e3:>10.1f}{secs / ort_ms:>10.2f}x{diff:>12.2g}")


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
    ap.add_argument("--attempts", action="store_true", help="also measure f16, int8 and ort-optimised graphs")
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
    if a.attempts:
        attempts(m, x, a.runs)


if __name__ == "__main__":
    main()
