#!/usr/bin/env python3
"""Generates the tiny test models, test images and reference outputs under models/test/.

    gen_test_models.py [--check] [--no-tract]

Writes, relative to this file's folder:
  test/<name>/model.onnx + model.toml   tiny ONNX models (opset 13, fixed shapes) whose outputs
                                        are known in closed form (see expected() below and
                                        models/README.md)
  test/bad/<name>/...                   deliberately broken models and manifests
  test/images/*.png                     synthetic test images
  test/reference/test_models.json       onnxruntime's output for every test model x image, the
                                        closed-form expectations, and the expected errors of
                                        the bad models

Every closed-form expectation is asserted against onnxruntime (and tract, PyPI `tract`,
when installed and --no-tract is not given) before anything is written. Files are only
rewritten when their content changes, so a second run leaves git clean. --check writes
nothing and exits 1 if any file would change.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
import reference_scores as rs  # noqa: E402

HERE = Path(__file__).resolve().parent
TEST = HERE / "test"
OPSET = 13
IR_VERSION = 8  # the IR version that came with opset 13 (ONNX 1.8); read by every runtime

# ---------------------------------------------------------------------------------------
# Test images. Solid colours and 1/8-margin frames whose resized pixels at the sampled
# positions are exact (the bilinear filter's support never reaches a colour edge there).

GREY = (128, 128, 128)
BLACK = (0, 0, 0)
WHITE = (255, 255, 255)
COLOUR = (200, 100, 50)
FRAME_OUT = (32, 64, 96)     # channel mean 64  -> 64/256  = 0.25
FRAME_IN = (224, 192, 160)   # channel mean 192 -> 192/256 = 0.75
PAD = 114                    # letterbox grey (the YOLO convention), 114/256 = 0.4453125


def image_arrays() -> dict[str, np.ndarray]:
    def solid(w, h, c):
        return np.broadcast_to(np.array(c, dtype=np.uint8), (h, w, 3)).copy()

    def framed(w, h, mx, my):
        a = solid(w, h, FRAME_OUT)
        a[my:h - my, mx:w - mx] = FRAME_IN
        return a

    xs = np.arange(320)
    ys = np.arange(240)
    r = np.rint(xs * 255 / 319).astype(np.uint8)[None, :].repeat(240, 0)
    g = np.rint(ys * 255 / 239).astype(np.uint8)[:, None].repeat(320, 1)
    b = ((r.astype(np.uint16) + g) // 2).astype(np.uint8)
    gradient = np.stack([r, g, b], axis=2)
    noise = np.random.default_rng(20240601).integers(0, 256, size=(300, 200, 3), dtype=np.uint8)
    return {
        "grey_320x240.png": solid(320, 240, GREY),
        "colour_320x240.png": solid(320, 240, COLOUR),
        "black_320x240.png": solid(320, 240, BLACK),
        "white_200x300.png": solid(200, 300, WHITE),
        "framed_320x240.png": framed(320, 240, 40, 30),
        "framed_200x300.png": framed(200, 300, 25, 38),
        "gradient_320x240.png": gradient,
        "noise_200x300.png": noise,
    }


# ---------------------------------------------------------------------------------------
# Graph building helpers.

def f32(name: str, values) -> TensorProto:
    return numpy_helper.from_array(np.asarray(values, dtype=np.float32), name)


def i64(name: str, values) -> TensorProto:
    return numpy_helper.from_array(np.asarray(values, dtype=np.int64), name)


def model_bytes(name: str, nodes, inp: tuple[str, list[int]], out: tuple[str, list[int]],
                inits, extra_opsets=()) -> bytes:
    graph = helper.make_graph(
        nodes, name, [helper.make_tensor_value_info(inp[0], TensorProto.FLOAT, inp[1])],
        [helper.make_tensor_value_info(out[0], TensorProto.FLOAT, out[1])], initializer=inits)
    opsets = [helper.make_opsetid("", OPSET)] + [helper.make_opsetid(d, v) for d, v in extra_opsets]
    m = helper.make_model(graph, opset_imports=opsets, producer_name="firebreak gen_test_models.py",
                          producer_version="1")
    m.ir_version = IR_VERSION
    if not extra_opsets:
        onnx.checker.check_model(m, full_check=True)
    return m.SerializeToString()


def reduce_mean(x: str, y: str, axes: list[int], keepdims: int):
    # Opset 13 ReduceMean takes axes as an attribute (an input only from opset 18).
    return helper.make_node("ReduceMean", [x], [y], axes=axes, keepdims=keepdims)


def g_softmax() -> bytes:
    """[1,3,8,8] NCHW -> per-channel means m -> 2*m + b -> Softmax -> [1,3]."""
    nodes = [reduce_mean("input", "m", [2, 3], 0),
             helper.make_node("MatMul", ["m", "W"], ["l"]),
             helper.make_node("Add", ["l", "b"], ["logits"]),
             helper.make_node("Softmax", ["logits"], ["scores"], axis=1)]
    inits = [f32("W", 2 * np.eye(3)), f32("b", SOFTMAX_BIAS)]
    return model_bytes("softmax", nodes, ("input", [1, 3, 8, 8]), ("scores", [1, 3]), inits)


def g_sigmoid() -> bytes:
    """[1,8,8,3] NHWC -> per-channel means m -> Gemm(m, diag(k), b) -> logits [1,3]."""
    nodes = [reduce_mean("input", "m", [1, 2], 0),
             helper.make_node("Gemm", ["m", "K", "b"], ["logits"])]
    inits = [f32("K", np.diag(SIGMOID_K)), f32("b", SIGMOID_BIAS)]
    return model_bytes("sigmoid", nodes, ("input", [1, 8, 8, 3]), ("logits", [1, 3]), inits)


def g_channel0(layout: str) -> bytes:
    """Mean of channel 0 (model order) -> [1,1]. NHWC transposes to NCHW first."""
    shape = [1, 3, 8, 8] if layout == "nchw" else [1, 8, 8, 3]
    nodes, x = [], "input"
    if layout == "nhwc":
        nodes.append(helper.make_node("Transpose", ["input"], ["nchw"], perm=[0, 3, 1, 2]))
        x = "nchw"
    nodes += [helper.make_node("Slice", [x, "s0", "s1", "ax"], ["c0"]),
              reduce_mean("c0", "m", [1, 2, 3], 0),
              helper.make_node("Reshape", ["m", "shape"], ["channel0"])]
    inits = [i64("s0", [0]), i64("s1", [1]), i64("ax", [1]), i64("shape", [1, 1])]
    return model_bytes(f"channel0_{layout}", nodes, ("input", shape), ("channel0", [1, 1]), inits)


def g_corners() -> bytes:
    """[1,3,16,16] -> [channel mean of pixel (0,0), channel mean of pixel (8,8)] -> [1,2]."""
    nodes = [helper.make_node("Slice", ["input", "tl0", "tl1", "hw"], ["tl"]),
             helper.make_node("Slice", ["input", "c0", "c1", "hw"], ["ce"]),
             reduce_mean("tl", "tlm", [1, 2, 3], 1),
             reduce_mean("ce", "cem", [1, 2, 3], 1),
             helper.make_node("Concat", ["tlm", "cem"], ["both"], axis=1),
             helper.make_node("Reshape", ["both", "shape"], ["corners"])]
    inits = [i64("tl0", [0, 0]), i64("tl1", [1, 1]), i64("c0", [8, 8]), i64("c1", [9, 9]),
             i64("hw", [2, 3]), i64("shape", [1, 2])]
    return model_bytes("corners", nodes, ("input", [1, 3, 16, 16]), ("corners", [1, 2]), inits)


# YOLO-style rows (cx, cy, w, h, objectness, p(knife), p(flag)) in 16x16 input pixels.
# Row 5's objectness is the mean of the whole normalised input (so it follows the image).
YOLO_ROWS = np.array([
    [4.0, 4.0, 4.0, 4.0, 0.9, 0.9, 0.1],    # 0 knife 0.81
    [4.5, 4.0, 4.0, 4.0, 0.8, 0.8, 0.2],    # 1 knife 0.64, IoU 0.778 with row 0 -> suppressed
    [12.0, 12.0, 4.0, 4.0, 0.9, 0.2, 0.9],  # 2 flag 0.81
    [12.0, 12.0, 4.0, 4.0, 0.85, 0.9, 0.1],  # 3 knife 0.765, same box as row 2: other class, kept
    [8.0, 8.0, 2.0, 2.0, 0.3, 0.5, 0.5],    # 4 knife 0.15 (tie -> first class) < 0.25 -> dropped
    [8.0, 12.0, 4.0, 2.0, 0.0, 1.0, 0.0],   # 5 knife, score = input mean
], dtype=np.float32)
YOLO_MASK = np.zeros_like(YOLO_ROWS)
YOLO_MASK[5, 4] = 1.0


def g_yolo() -> bytes:
    """[1,3,16,16] -> mean over everything (scalar) * MASK + ROWS -> [1,6,7]."""
    nodes = [reduce_mean("input", "m", [1, 2, 3], 1),
             helper.make_node("Reshape", ["m", "shape"], ["m3"]),
             helper.make_node("Mul", ["m3", "mask"], ["obj"]),
             helper.make_node("Add", ["obj", "rows"], ["detections"])]
    inits = [i64("shape", [1, 1, 1]), f32("mask", YOLO_MASK[None]), f32("rows", YOLO_ROWS[None])]
    return model_bytes("yolo", nodes, ("input", [1, 3, 16, 16]), ("detections", [1, 6, 7]), inits)


def g_unknown_op() -> bytes:
    # Same input and output as channel0_nchw_*, so only the operator is wrong.
    nodes = [helper.make_node("FirebreakNoSuchOp", ["input"], ["channel0"], domain="org.firebreak.test")]
    return model_bytes("unknown_op", nodes, ("input", [1, 3, 8, 8]), ("channel0", [1, 1]), [],
                       extra_opsets=[("org.firebreak.test", 1)])


SOFTMAX_BIAS = [0.0, 0.25, -0.25]
SIGMOID_K = [1.0, 2.0, 0.5]
SIGMOID_BIAS = [0.0, 0.0, 0.25]

# ---------------------------------------------------------------------------------------
# Manifests.

SCALE_256 = 0.00390625  # 1/256: every normalised value below is exact in float32


def toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, float):
        return repr(v)
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{k} = {toml_value(x)}" for k, x in v.items()) + " }"
    return str(v)


def manifest_text(comment: str, top: dict, inp: dict, out: dict, cats: dict | None = None) -> str:
    lines = [f"# {c}" if c else "#" for c in comment.strip().split("\n")]
    lines.append("# Generated by models/gen_test_models.py; do not edit.")
    lines += [f"{k} = {toml_value(v)}" for k, v in top.items()]
    for title, table in (("input", inp), ("output", out)):
        lines += ["", f"[{title}]"] + [f"{k} = {toml_value(v)}" for k, v in table.items()]
    if cats:
        lines += ["", "[categories]"] + [f"{k} = {toml_value(v)}" for k, v in cats.items()]
    return "\n".join(lines) + "\n"


def input_table(shape, layout, color, resize, scale=SCALE_256, mean=(0.0,) * 3, std=(1.0,) * 3,
                **extra) -> dict:
    t = {"name": "input", "shape": shape, "dtype": "f32", "layout": layout, "color": color,
         "resize": resize}
    t.update(extra)
    t.update({"filter": "bilinear", "scale": scale, "mean": list(mean), "std": list(std)})
    return t


DESCRIPTIONS = {
    "softmax_nchw_rgb": "Test: softmax over per-channel means (NCHW, RGB, stretch)",
    "sigmoid_nhwc_bgr": "Test: logits of per-channel means, sigmoid applied by the runtime (NHWC, BGR)",
    "yolo_nchw_rgb": "Test: YOLO-style detections for threshold and NMS (letterbox)",
    "channel0": "Test: mean of channel 0, so colour order and layout show ({layout}, {color})",
    "corners": "Test: channel means of pixels (0,0) and (8,8), so the resize policy shows ({resize})",
    "sha256_mismatch": "Bad: the manifest's sha256 is not the model file's",
    "shape_mismatch": "Bad: the manifest's input shape differs from the model's",
    "wrong_input_name": "Bad: the manifest names an input the model does not have",
    "wrong_output_name": "Bad: the manifest names an output the model does not have",
    "missing_file": "Bad: the manifest's model file does not exist",
    "unknown_op": "Bad: a node with an operator no runtime implements",
}


def describe(name: str, inp: dict) -> str:
    key = name.split("_")[0] if name.startswith(("channel0", "corners")) else name
    return DESCRIPTIONS[key].format(**inp)


def good_models() -> dict[str, tuple[str, bytes, dict, dict, dict | None]]:
    """name -> (comment, onnx bytes, input table, output table, categories)."""
    ch0 = {"nchw": g_channel0("nchw"), "nhwc": g_channel0("nhwc")}
    corners = g_corners()
    models = {
        "softmax_nchw_rgb": (
            "Softmax classifier. Output = softmax(2*m + [0, 0.25, -0.25]) where m[c] is the mean\n"
            "of normalised channel c (R, G, B): for a solid (R,G,B) image m[c] = p/64 - 2.",
            g_softmax(),
            input_table([1, 3, 8, 8], "nchw", "rgb", "stretch", mean=(0.5,) * 3, std=(0.25,) * 3),
            {"name": "scores", "shape": [1, 3], "kind": "softmax", "logits": False,
             "labels": ["red", "green", "blue"]},
            {"red": {"category": "test_red", "threshold": 0.5}}),
        "sigmoid_nhwc_bgr": (
            "Multi-label classifier emitting logits (the runtime applies the sigmoid).\n"
            "Logits = m * [1, 2, 0.5] + [0, 0, 0.25] where m[c] = (mean of channel c - 128) / 32\n"
            "in model order B, G, R.",
            g_sigmoid(),
            input_table([1, 8, 8, 3], "nhwc", "bgr", "stretch", scale=1.0, mean=(128.0,) * 3,
                        std=(32.0,) * 3),
            {"name": "logits", "shape": [1, 3], "kind": "sigmoid", "logits": True,
             "labels": ["blue", "green", "red"]},
            {"red": {"category": "test_red", "threshold": 0.75},
             "blue": {"category": "test_blue", "threshold": 0.75}}),
        "yolo_nchw_rgb": (
            "YOLO-style detector: [1, 6, 5 + 2] rows (cx, cy, w, h, objectness, p(knife), p(flag))\n"
            "in 16x16 input pixels, constant except row 5's objectness = mean of the whole\n"
            "normalised input. Expected after threshold 0.25 + per-class NMS 0.45: rows 5 (if its\n"
            "score passes), 0, 2, 3; row 1 suppressed by row 0, row 4 below the threshold. Row 5\n"
            "scores 0.1118 on black_320x240 (dropped) and 0.8272 on white_200x300 (top knife).",
            g_yolo(),
            input_table([1, 3, 16, 16], "nchw", "rgb", "letterbox", scale=1 / 255, pad_value=PAD),
            {"name": "detections", "shape": [1, 6, 7], "kind": "yolo", "logits": False,
             "labels": ["knife", "flag"], "box_format": "cxcywh", "score_threshold": 0.25,
             "iou_threshold": 0.45, "max_detections": 100},
            {"knife": {"category": "weapon", "threshold": 0.5},
             "flag": {"category": "extremist_symbol", "threshold": 0.5}}),
    }
    for layout in ("nchw", "nhwc"):
        shape = [1, 3, 8, 8] if layout == "nchw" else [1, 8, 8, 3]
        for color in ("rgb", "bgr"):
            models[f"channel0_{layout}_{color}"] = (
                f"Output = mean of channel 0 of the {layout.upper()} input / 256: the red mean for\n"
                "rgb, the blue mean for bgr. Same graph for both colour orders.",
                ch0[layout], input_table(shape, layout, color, "stretch"),
                {"name": "channel0", "shape": [1, 1], "kind": "sigmoid", "logits": False,
                 "labels": ["channel0"]}, None)
    for resize, extra in (("stretch", {}), ("resize_then_center_crop", {"resize_to": [24, 24]}),
                          ("letterbox", {"pad_value": PAD})):
        short = {"resize_then_center_crop": "crop"}.get(resize, resize)
        models[f"corners_{short}"] = (
            "Output = [channel mean of input pixel (row 0, col 0), of pixel (8, 8)] / 256, to\n"
            f"see where the image lands with resize = {resize!r}.",
            corners, input_table([1, 3, 16, 16], "nchw", "rgb", resize, **extra),
            {"name": "corners", "shape": [1, 2], "kind": "sigmoid", "logits": False,
             "labels": ["top_left", "centre"]}, None)
    return models


# ---------------------------------------------------------------------------------------
# Closed-form expectations: (model, image) -> expected raw output values (flattened).

def sig(x):
    return 1.0 / (1.0 + np.exp(-np.asarray(x, dtype=np.float64)))


def smax(x):
    e = np.exp(np.asarray(x, dtype=np.float64) - np.max(x))
    return e / e.sum()


def expected() -> dict[tuple[str, str], list[float]]:
    e = {}
    mean3 = lambda c: sum(c) / 3 / 256  # noqa: E731
    solids = (("grey_320x240.png", GREY, 320, 240), ("colour_320x240.png", COLOUR, 320, 240),
              ("black_320x240.png", BLACK, 320, 240), ("white_200x300.png", WHITE, 200, 300))
    for img, c, w, h in solids:
        m = np.array(c) / 64 - 2
        e[("softmax_nchw_rgb", img)] = list(smax(2 * m + np.array(SOFTMAX_BIAS)))
        bgr = np.array(c[::-1])
        e[("sigmoid_nhwc_bgr", img)] = list((bgr - 128) / 32 * np.array(SIGMOID_K) + SIGMOID_BIAS)
        for layout in ("nchw", "nhwc"):
            e[(f"channel0_{layout}_rgb", img)] = [c[0] / 256]
            e[(f"channel0_{layout}_bgr", img)] = [c[2] / 256]
        e[("corners_stretch", img)] = [mean3(c), mean3(c)]
        e[("corners_crop", img)] = [mean3(c), mean3(c)]
        e[("corners_letterbox", img)] = [PAD / 256, mean3(c)]
        # Letterboxed into 16x16: 320x240 -> 16x12 (2 pad rows above and below), 200x300 ->
        # 11x16 (2 pad columns left, 3 right); the mean mixes image and padding.
        nw, nh = rs.letterbox_size(w, h, 16, 16)
        obj = (nw * nh * sum(c) / 3 + (256 - nw * nh) * PAD) / 256 / 255
        rows = YOLO_ROWS.astype(np.float64).copy()
        rows[5, 4] = obj
        e[("yolo_nchw_rgb", img)] = list(rows.reshape(-1))
    for img in ("framed_320x240.png", "framed_200x300.png"):
        e[("corners_stretch", img)] = [mean3(FRAME_OUT), mean3(FRAME_IN)]
        e[("corners_crop", img)] = [mean3(FRAME_IN), mean3(FRAME_IN)]
        e[("corners_letterbox", img)] = [PAD / 256, mean3(FRAME_IN)]
    return {k: [float(x) for x in v] for k, v in e.items()}


# ---------------------------------------------------------------------------------------
# Writing.

class Writer:
    def __init__(self, check: bool):
        self.check = check
        self.changed: list[str] = []

    def bytes(self, path: Path, data: bytes) -> None:
        if path.exists() and path.read_bytes() == data:
            return
        self.changed.append(str(path.relative_to(HERE)))
        if not self.check:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)

    def png(self, path: Path, arr: np.ndarray) -> None:
        # PNG bytes depend on the zlib build; compare pixels, not bytes.
        if path.exists():
            with Image.open(path) as im:
                if im.mode == "RGB" and np.array_equal(np.asarray(im), arr):
                    return
        self.changed.append(str(path.relative_to(HERE)))
        if not self.check:
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(arr, "RGB").save(path, optimize=True)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def try_tract(path: Path, shape: list[int], x: np.ndarray | None):
    import tract

    model = tract.onnx().load(str(path))
    model.set_input_fact(0, ",".join(map(str, shape)) + ",f32")
    runnable = model.into_model().into_runnable()
    return None if x is None else runnable.run([x])[0].to_numpy()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--check", action="store_true", help="write nothing; exit 1 if stale")
    ap.add_argument("--no-tract", action="store_true", help="skip the tract cross-check")
    a = ap.parse_args()
    use_tract, tract_version = not a.no_tract, None
    if use_tract:
        try:
            import tract
            tract_version = tract.version()
        except ImportError:
            print("gen_test_models: PyPI tract not installed; skipping the tract cross-check",
                  file=sys.stderr)
            use_tract = False

    w = Writer(a.check)
    images = image_arrays()
    for name, arr in images.items():
        w.png(TEST / "images" / name, arr)

    models = good_models()
    for name, (comment, data, inp, out, cats) in models.items():
        d = TEST / name
        top = {"name": name, "description": describe(name, inp),
               "license": "CC0-1.0", "file": "model.onnx", "sha256": sha(data)}
        w.bytes(d / "model.onnx", data)
        w.bytes(d / "model.toml", manifest_text(comment, top, inp, out, cats).encode())

    # Bad models: each breaks exactly one thing.
    ch0 = models["channel0_nchw_rgb"]
    ch0_inp, ch0_out = ch0[2], ch0[3]
    unknown = g_unknown_op()
    bad = {
        "sha256_mismatch": ("The manifest's sha256 is not the model file's.", ch0[1],
                            {"sha256": sha(b"firebreak: deliberately not the model")}, ch0_inp,
                            ch0_out, "checksum"),
        "shape_mismatch": ("The manifest declares a 16x16 input; the model takes 8x8.", ch0[1], {},
                           dict(ch0_inp, shape=[1, 3, 16, 16]), ch0_out, "input_shape"),
        "wrong_input_name": ("The manifest names an input the model does not have.", ch0[1], {},
                             dict(ch0_inp, name="pixels"), ch0_out, "input_name"),
        "wrong_output_name": ("The manifest names an output the model does not have.", ch0[1], {},
                              ch0_inp, dict(ch0_out, name="scores"), "output_name"),
        "missing_file": ("The manifest's model file does not exist.", None,
                         {"file": "absent.onnx", "sha256": sha(ch0[1])}, ch0_inp, ch0_out,
                         "file_missing"),
        "unknown_op": ("A node FirebreakNoSuchOp in custom domain org.firebreak.test, which no\n"
                       "runtime implements; manifest and sha256 are right.", unknown, {},
                       ch0_inp, ch0_out, "unsupported_operator"),
    }
    bad_expect = {}
    for name, (comment, data, top_over, inp, out, err) in bad.items():
        d = TEST / "bad" / name
        top = {"name": f"bad_{name}", "description": describe(name, inp),
               "license": "CC0-1.0", "file": "model.onnx", "sha256": sha(data or b"")}
        top.update(top_over)
        if data is not None:
            w.bytes(d / "model.onnx", data)
        w.bytes(d / "model.toml", manifest_text(comment, top, inp, out).encode())
        bad_expect[name] = err

    if a.check:
        if w.changed:
            print("gen_test_models: stale: " + ", ".join(w.changed), file=sys.stderr)
            return 1
        print("gen_test_models: up to date")
        return 0

    # Reference outputs and the checks of every closed-form expectation.
    exp = expected()
    img_paths = [TEST / "images" / n for n in images]
    ref = {"generated_by": "models/gen_test_models.py", "versions": rs.versions(),
           "execution_provider": "CPUExecutionProvider", "tolerance_note":
           "closed-form values are exact reals; float32 results agree within 1e-6",
           "models": {}, "bad": {}}
    problems = []
    for name in models:
        m = rs.load_manifest(TEST / name)
        rs.check_model(m)
        sess = rs.session(m)
        entries = []
        for p in img_paths:
            x, geo = rs.preprocess(p, m)
            r = rs.run_one(sess, m, x, geo)
            entry = {"image": p.name, "input_sha256": rs.tensor_sha256(x),
                     "placed": {"scaled_size": [geo.scaled_w, geo.scaled_h],
                                "offset": [geo.offset_x, geo.offset_y]}}
            entry.update(r)
            want = exp.get((name, p.name))
            if want is not None:
                entry["expected_closed_form"] = want
                got = r["output"]["data"]
                if not np.allclose(got, want, rtol=0, atol=1e-6):
                    problems.append(f"{name} on {p.name}: onnxruntime {got}, closed form {want}")
            if use_tract:
                t = try_tract(m.path, m.shape, x).reshape(-1)
                if not np.allclose(t, r["output"]["data"], rtol=0, atol=1e-6):
                    problems.append(f"{name} on {p.name}: tract {list(t)}, onnxruntime {r['output']['data']}")
            entries.append(entry)
        ref["models"][name] = {"sha256": m.sha256, "results": entries}

    for name, err in bad_expect.items():
        d = TEST / "bad" / name
        m = rs.load_manifest(d)
        detail = None
        try:
            rs.check_model(m)
            rs.session(m)
        except rs.ManifestError as exc:
            detail = f"manifest check: {exc}"
        except Exception as exc:  # onnxruntime refuses the model
            detail = f"onnxruntime: {str(exc).splitlines()[0][:200]}"
        if detail is None:
            problems.append(f"bad/{name} was accepted")
        # Paths relative to the repository, so the file does not depend on the checkout.
        detail = detail and detail.replace(str(HERE.parent) + "/", "")
        entry = {"expected_error": err, "python_check": detail}
        if use_tract and err == "unsupported_operator":
            try:
                try_tract(m.path, m.shape, None)
                problems.append(f"bad/{name}: tract loaded it")
            except Exception as exc:  # noqa: BLE001
                entry["tract"] = str(exc).splitlines()[0][:200]
        ref["bad"][name] = entry
    if use_tract:
        ref["versions"]["tract"] = tract_version

    if problems:
        print("gen_test_models: expectation failures:\n  " + "\n  ".join(problems), file=sys.stderr)
        return 1
    w.bytes(TEST / "reference" / "test_models.json", (json.dumps(ref, indent=1) + "\n").encode())
    print("gen_test_models: " + (f"wrote {', '.join(w.changed)}" if w.changed else "nothing changed"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
