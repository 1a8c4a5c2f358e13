#!/usr/bin/env python3
"""Reference scores for a Firebreak classifier model, computed with onnxruntime.

    reference_scores.py MODEL_DIR INPUT... [--save-inputs DIR [--save-only NAME ...]]
                        [--latency RUNS] [--threads 1,2] [--tract] [--out FILE]

MODEL_DIR holds a `model.toml` manifest (schema: models/README.md). Each INPUT is an image
(PNG, JPEG, anything Pillow decodes) that is preprocessed exactly as the manifest says, or
a `.npy` file holding an already-preprocessed float32 input tensor of the manifest's shape,
so the Rust side and this script can be compared on identical inputs.

Prints (or writes to --out) JSON: the manifest, library versions, and for every input the
input tensor's sha256 (little-endian float32 bytes in the model's layout), the raw model
outputs and the label scores (plus detections for `kind = "yolo"`). --save-inputs writes
each image's preprocessed tensor as DIR/<image stem>.input.npy. --latency measures
onnxruntime's batch-1 latency (median of RUNS runs after 5 warm-ups) with
intra_op_num_threads set to each of --threads, and a batch of 4 too when the model's batch
dimension is symbolic. --tract also runs the model with tract (PyPI
`tract`, the Python bindings of the Rust crate) and reports the largest difference.

The preprocessing here is the normative description the Rust crate follows; it is spelled
out step by step in models/README.md. Needs onnxruntime, numpy and pillow (the venv made
by models/setup_venv.sh has them).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import statistics
import sys
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

LAYOUTS = ("nchw", "nhwc")
COLORS = ("rgb", "bgr")
RESIZES = ("stretch", "resize_then_center_crop", "letterbox")
FILTERS = ("bilinear",)
KINDS = ("softmax", "sigmoid", "yolo")
BOX_FORMATS = ("cxcywh",)

TOP_KEYS = {"name", "version", "description", "license", "source", "file", "sha256",
            "input", "output", "categories"}
INPUT_KEYS = {"name", "shape", "dtype", "layout", "color", "resize", "resize_to", "pad_value",
              "filter", "scale", "mean", "std"}
OUTPUT_KEYS = {"name", "shape", "kind", "logits", "labels", "box_format", "score_threshold",
               "iou_threshold", "max_detections"}
CATEGORY_KEYS = {"category", "threshold"}


class ManifestError(Exception):
    """A model.toml that does not follow the schema (or does not match its model file)."""


@dataclass
class Manifest:
    dir: Path
    raw: dict
    name: str
    file: str
    sha256: str
    input_name: str
    shape: list[int]
    layout: str
    color: str
    resize: str
    resize_to: list[int] | None
    pad_value: int
    scale: float
    mean: list[float]
    std: list[float]
    output_name: str
    output_shape: list[int]
    kind: str
    logits: bool
    labels: list[str]
    score_threshold: float = 0.25
    iou_threshold: float = 0.45
    max_detections: int = 100
    categories: dict = field(default_factory=dict)

    @property
    def path(self) -> Path:
        return self.dir / self.file

    @property
    def height(self) -> int:
        return self.shape[2] if self.layout == "nchw" else self.shape[1]

    @property
    def width(self) -> int:
        return self.shape[3] if self.layout == "nchw" else self.shape[2]


def _need(table: dict, key: str, where: str, kind: type):
    if key not in table:
        raise ManifestError(f"{where}{key}: missing")
    if not isinstance(table[key], kind):
        raise ManifestError(f"{where}{key}: wrong type ({type(table[key]).__name__})")
    return table[key]


def _unknown(table: dict, allowed: set, where: str) -> None:
    extra = sorted(set(table) - allowed)
    if extra:
        raise ManifestError(f"{where}: unknown field(s) {', '.join(extra)}")


def _floats(value, n: int, where: str) -> list[float]:
    if not isinstance(value, list) or len(value) != n or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
        raise ManifestError(f"{where}: must be a list of {n} numbers")
    return [float(v) for v in value]


def load_manifest(model_dir: str | os.PathLike) -> Manifest:
    """Parses and validates MODEL_DIR/model.toml (not the model file itself)."""
    d = Path(model_dir)
    try:
        raw = tomllib.loads((d / "model.toml").read_text())
    except FileNotFoundError as exc:
        raise ManifestError(f"{d}/model.toml: not found") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ManifestError(f"{d}/model.toml: {exc}") from exc
    _unknown(raw, TOP_KEYS, "model.toml")
    name = _need(raw, "name", "", str)
    file = _need(raw, "file", "", str)
    sha = _need(raw, "sha256", "", str)
    if len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
        raise ManifestError("sha256: must be 64 lowercase hex digits")
    inp = _need(raw, "input", "", dict)
    out = _need(raw, "output", "", dict)
    _unknown(inp, INPUT_KEYS, "input")
    _unknown(out, OUTPUT_KEYS, "output")

    shape = _need(inp, "shape", "input.", list)
    if len(shape) != 4 or not all(isinstance(v, int) and v > 0 for v in shape):
        raise ManifestError("input.shape: must be 4 positive integers")
    if shape[0] != 1:
        raise ManifestError("input.shape: batch (first dimension) must be 1")
    layout = _need(inp, "layout", "input.", str)
    if layout not in LAYOUTS:
        raise ManifestError(f"input.layout: one of {LAYOUTS}")
    channels = shape[1] if layout == "nchw" else shape[3]
    if channels != 3:
        raise ManifestError(f"input.shape: {layout} with {channels} channels (must be 3)")
    if inp.get("dtype", "f32") != "f32":
        raise ManifestError("input.dtype: only \"f32\" is supported")
    color = _need(inp, "color", "input.", str)
    if color not in COLORS:
        raise ManifestError(f"input.color: one of {COLORS}")
    resize = _need(inp, "resize", "input.", str)
    if resize not in RESIZES:
        raise ManifestError(f"input.resize: one of {RESIZES}")
    if inp.get("filter", "bilinear") not in FILTERS:
        raise ManifestError(f"input.filter: one of {FILTERS}")
    h, w = (shape[2], shape[3]) if layout == "nchw" else (shape[1], shape[2])
    resize_to = inp.get("resize_to")
    if resize == "resize_then_center_crop":
        if (not isinstance(resize_to, list) or len(resize_to) != 2
                or not all(isinstance(v, int) for v in resize_to)):
            raise ManifestError("input.resize_to: [width, height] needed for resize_then_center_crop")
        if resize_to[0] < w or resize_to[1] < h:
            raise ManifestError(f"input.resize_to: {resize_to} is smaller than the input {w}x{h}")
    elif resize_to is not None:
        raise ManifestError("input.resize_to: only for resize = \"resize_then_center_crop\"")
    pad_value = inp.get("pad_value")
    if resize == "letterbox":
        pad_value = 0 if pad_value is None else pad_value
        if not isinstance(pad_value, int) or not 0 <= pad_value <= 255:
            raise ManifestError("input.pad_value: an integer 0..=255")
    elif pad_value is not None:
        raise ManifestError("input.pad_value: only for resize = \"letterbox\"")
    scale = inp.get("scale", 1.0)
    if not isinstance(scale, (int, float)) or isinstance(scale, bool) or not scale > 0:
        raise ManifestError("input.scale: a positive number")
    mean = _floats(inp.get("mean", [0.0, 0.0, 0.0]), 3, "input.mean")
    std = _floats(inp.get("std", [1.0, 1.0, 1.0]), 3, "input.std")
    if not all(s > 0 for s in std):
        raise ManifestError("input.std: every value must be > 0")

    kind = _need(out, "kind", "output.", str)
    if kind not in KINDS:
        raise ManifestError(f"output.kind: one of {KINDS}")
    labels = _need(out, "labels", "output.", list)
    if not labels or not all(isinstance(v, str) and v for v in labels) or len(set(labels)) != len(labels):
        raise ManifestError("output.labels: non-empty, distinct, non-empty strings")
    out_shape = _need(out, "shape", "output.", list)
    if kind == "yolo":
        if len(out_shape) != 3 or out_shape[0] != 1 or out_shape[2] != 5 + len(labels):
            raise ManifestError(f"output.shape: yolo needs [1, N, 5 + {len(labels)} labels]")
    elif out_shape != [1, len(labels)]:
        raise ManifestError(f"output.shape: {kind} needs [1, {len(labels)}] (one score per label)")
    yolo_only = {"box_format", "score_threshold", "iou_threshold", "max_detections"} & set(out)
    if kind != "yolo" and yolo_only:
        raise ManifestError(f"output: {', '.join(sorted(yolo_only))} only for kind = \"yolo\"")
    if out.get("box_format", "cxcywh") not in BOX_FORMATS:
        raise ManifestError(f"output.box_format: one of {BOX_FORMATS}")
    logits = out.get("logits", False)
    if not isinstance(logits, bool):
        raise ManifestError("output.logits: true or false")

    cats = raw.get("categories", {})
    if not isinstance(cats, dict):
        raise ManifestError("categories: a table")
    for label, c in cats.items():
        if label not in labels:
            raise ManifestError(f"categories.{label}: not one of output.labels")
        if not isinstance(c, dict):
            raise ManifestError(f"categories.{label}: an inline table {{ category, threshold }}")
        _unknown(c, CATEGORY_KEYS, f"categories.{label}")
        if not isinstance(c.get("category"), str) or not c["category"]:
            raise ManifestError(f"categories.{label}.category: a non-empty string")
        t = c.get("threshold")
        if not isinstance(t, (int, float)) or isinstance(t, bool) or not 0 <= t <= 1:
            raise ManifestError(f"categories.{label}.threshold: a number in 0..=1")

    return Manifest(
        dir=d, raw=raw, name=name, file=file, sha256=sha, input_name=_need(inp, "name", "input.", str),
        shape=shape, layout=layout, color=color, resize=resize, resize_to=resize_to,
        pad_value=pad_value if pad_value is not None else 0, scale=float(scale), mean=mean,
        std=std, output_name=_need(out, "name", "output.", str), output_shape=out_shape,
        kind=kind, logits=logits, labels=labels,
        score_threshold=float(out.get("score_threshold", 0.25)),
        iou_threshold=float(out.get("iou_threshold", 0.45)),
        max_detections=int(out.get("max_detections", 100)), categories=cats)


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def tensor_sha256(t: np.ndarray) -> str:
    """sha256 of the tensor's little-endian float32 bytes in C (row-major) order."""
    return hashlib.sha256(np.ascontiguousarray(t, dtype="<f4").tobytes()).hexdigest()


# ---------------------------------------------------------------------------------------
# Preprocessing. Geometry -> channel order -> normalisation -> layout, as in models/README.md.

@dataclass
class Geometry:
    """Where the source image landed in the model input, to map boxes back."""
    src_w: int
    src_h: int
    # The source image was resized to (scaled_w, scaled_h) and its top-left corner placed
    # at (offset_x, offset_y) of the model input (negative offsets: cropped away).
    scaled_w: int
    scaled_h: int
    offset_x: int
    offset_y: int

    def to_source(self, x: float, y: float) -> tuple[float, float]:
        sx = (x - self.offset_x) * self.src_w / self.scaled_w
        sy = (y - self.offset_y) * self.src_h / self.scaled_h
        return min(max(sx, 0.0), float(self.src_w)), min(max(sy, 0.0), float(self.src_h))


def letterbox_size(w: int, h: int, W: int, H: int) -> tuple[int, int]:
    """Size of a w x h image scaled to fit W x H keeping its aspect ratio. Integer arithmetic
    (round half up) so every implementation gets the same size."""
    if w * H >= h * W:  # limited by the width
        return W, max(1, min(H, (2 * h * W + w) // (2 * w)))
    return max(1, min(W, (2 * w * H + h) // (2 * h))), H


def resize_rgb(img: Image.Image, w: int, h: int) -> Image.Image:
    # Pillow's BILINEAR resize is a separable convolution with the triangle filter whose
    # support is widened by the scale factor when shrinking (an antialiasing filter, not
    # 2x2-sample bilinear interpolation). Pillow's docs (Concepts, Filters): for resize,
    # BILINEAR uses "linear interpolation on all pixels that may contribute to the output
    # value". On 8-bit images both passes round to 8 bits (Pillow's Resample.c keeps an
    # 8-bit intermediate image). An unchanged size is returned as an unfiltered copy.
    return img.resize((w, h), resample=Image.Resampling.BILINEAR)


def geometry_image(img: Image.Image, m: Manifest) -> tuple[Image.Image, Geometry]:
    W, H = m.width, m.height
    w, h = img.size
    if m.resize == "stretch":
        return resize_rgb(img, W, H), Geometry(w, h, W, H, 0, 0)
    if m.resize == "resize_then_center_crop":
        rw, rh = m.resize_to
        left, top = (rw - W) // 2, (rh - H) // 2
        out = resize_rgb(img, rw, rh).crop((left, top, left + W, top + H))
        return out, Geometry(w, h, rw, rh, -left, -top)
    nw, nh = letterbox_size(w, h, W, H)
    left, top = (W - nw) // 2, (H - nh) // 2
    canvas = Image.new("RGB", (W, H), (m.pad_value,) * 3)
    canvas.paste(resize_rgb(img, nw, nh), (left, top))
    return canvas, Geometry(w, h, nw, nh, left, top)


def load_rgb(path: str | os.PathLike) -> Image.Image:
    """Decodes to 8-bit RGB: palette expanded, greyscale replicated, alpha dropped (not
    composited). EXIF orientation is not applied."""
    with Image.open(path) as im:
        im.load()
        return im.convert("RGB")


def normalise(hwc_rgb_u8: np.ndarray, m: Manifest) -> np.ndarray:
    """uint8 H x W x 3 RGB -> float32 tensor of the manifest's shape."""
    x = hwc_rgb_u8
    if m.color == "bgr":
        x = x[:, :, ::-1]
    # Each step rounds to float32, in this order: p * scale, - mean[c], / std[c].
    x = x.astype(np.float32) * np.float32(m.scale)
    x = x - np.asarray(m.mean, dtype=np.float32)
    x = x / np.asarray(m.std, dtype=np.float32)
    if m.layout == "nchw":
        x = x.transpose(2, 0, 1)
    return np.ascontiguousarray(x[np.newaxis], dtype=np.float32)


def preprocess(path: str | os.PathLike, m: Manifest) -> tuple[np.ndarray, Geometry]:
    img, geo = geometry_image(load_rgb(path), m)
    return normalise(np.asarray(img, dtype=np.uint8), m), geo


# ---------------------------------------------------------------------------------------
# Running and post-processing.

def check_model(m: Manifest) -> None:
    """The checks the Rust loader makes too: file present, sha256, input/output names and
    shapes (a symbolic ONNX dimension takes the manifest's value)."""
    import onnx

    if not m.path.is_file():
        raise ManifestError(f"file: {m.path} not found")
    got = file_sha256(m.path)
    if got != m.sha256:
        raise ManifestError(f"sha256: {m.path} has {got}, manifest says {m.sha256}")
    g = onnx.load(str(m.path), load_external_data=False).graph
    inits = {i.name for i in g.initializer}
    inputs = {v.name: v for v in g.input if v.name not in inits}
    outputs = {v.name: v for v in g.output}
    if m.input_name not in inputs:
        raise ManifestError(f"input.name: {m.input_name!r} is not a model input ({sorted(inputs)})")
    if m.output_name not in outputs:
        raise ManifestError(f"output.name: {m.output_name!r} is not a model output ({sorted(outputs)})")
    for what, v, want in (("input", inputs[m.input_name], m.shape),
                          ("output", outputs[m.output_name], m.output_shape)):
        tt = v.type.tensor_type
        if tt.elem_type != onnx.TensorProto.FLOAT:
            raise ManifestError(f"{what}: model's {v.name!r} is not float32")
        if not tt.HasField("shape"):
            continue
        dims = [d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim]
        if len(dims) != len(want) or any(d is not None and d != x for d, x in zip(dims, want)):
            shown = [d if d is not None else "?" for d in dims]
            raise ManifestError(f"{what}.shape: manifest {want}, model {shown}")


def session(m: Manifest, threads: int | None = None):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads is not None:
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
    return ort.InferenceSession(str(m.path), sess_options=opts, providers=["CPUExecutionProvider"])


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x.astype(np.float64)))


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x.astype(np.float64) - np.max(x))
    return e / e.sum()


def iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def yolo_detections(raw: np.ndarray, m: Manifest, geo: Geometry | None) -> list[dict]:
    """[1, N, 5 + C] rows (cx, cy, w, h, objectness, class scores...) in model-input
    pixels -> detections kept by the score threshold and per-class greedy NMS."""
    rows = raw.reshape(raw.shape[1], raw.shape[2]).astype(np.float64)
    cands = []
    for i, r in enumerate(rows):
        obj, cls = r[4], r[5:]
        if m.logits:
            obj, cls = sigmoid(obj), sigmoid(cls)
        c = int(np.argmax(cls))  # first maximum wins a tie
        score = float(obj * cls[c])
        if score >= m.score_threshold:
            cx, cy, bw, bh = (float(v) for v in r[:4])
            cands.append((score, i, c, (cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2)))
    cands.sort(key=lambda t: (-t[0], t[1]))  # score descending, then row order
    kept = []
    for cand in cands:
        if all(k[2] != cand[2] or iou(k[3], cand[3]) <= m.iou_threshold for k in kept):
            kept.append(cand)
    dets = []
    for score, i, c, box in kept[: m.max_detections]:
        d = {"row": i, "label": m.labels[c], "score": score, "box_xyxy": list(box)}
        if geo is not None:
            x1, y1 = geo.to_source(box[0], box[1])
            x2, y2 = geo.to_source(box[2], box[3])
            d["box_xyxy_source"] = [x1, y1, x2, y2]
        dets.append(d)
    return dets


def label_scores(raw: np.ndarray, m: Manifest, geo: Geometry | None):
    """Per-label frame scores (and the detections for yolo)."""
    if m.kind == "yolo":
        dets = yolo_detections(raw, m, geo)
        scores = {lab: 0.0 for lab in m.labels}
        for d in dets:
            scores[d["label"]] = max(scores[d["label"]], d["score"])
        return scores, dets
    v = raw.reshape(-1)
    if m.logits:
        v = softmax(v) if m.kind == "softmax" else sigmoid(v)
    return {lab: float(s) for lab, s in zip(m.labels, v)}, None


def category_scores(scores: dict, m: Manifest) -> list[dict]:
    out = []
    for label, c in m.categories.items():
        out.append({"label": label, "category": c["category"], "score": scores[label],
                    "threshold": c["threshold"], "flagged": scores[label] >= c["threshold"]})
    return out


def run_one(sess, m: Manifest, x: np.ndarray, geo: Geometry | None) -> dict:
    (raw,) = sess.run([m.output_name], {m.input_name: x})
    if list(raw.shape) != m.output_shape:
        raise ManifestError(f"output.shape: manifest {m.output_shape}, model produced {list(raw.shape)}")
    scores, dets = label_scores(raw, m, geo)
    r = {"output": {"name": m.output_name, "shape": list(raw.shape),
                    "data": [float(v) for v in raw.reshape(-1)]},
         "scores": scores, "categories": category_scores(scores, m)}
    if dets is not None:
        r["detections"] = dets
    return r


def onnx_io_dims(m: Manifest) -> dict:
    """The model's own input/output dimensions (symbolic ones by name)."""
    import onnx

    g = onnx.load(str(m.path), load_external_data=False).graph
    dims = lambda v: [d.dim_value if d.HasField("dim_value") else d.dim_param  # noqa: E731
                      for d in v.type.tensor_type.shape.dim]
    return {"input": {v.name: dims(v) for v in g.input if v.name == m.input_name},
            "output": {v.name: dims(v) for v in g.output if v.name == m.output_name}}


def latency(m: Manifest, x: np.ndarray, runs: int, threads: int) -> dict:
    s = session(m, threads)
    feed = {m.input_name: x}
    for _ in range(5):
        s.run([m.output_name], feed)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        s.run([m.output_name], feed)
        times.append((time.perf_counter() - t0) * 1000.0)
    times.sort()
    return {"intra_op_num_threads": threads, "runs": runs, "median_ms": round(statistics.median(times), 3),
            "min_ms": round(times[0], 3), "p90_ms": round(times[int(0.9 * (runs - 1))], 3)}


def tract_check(m: Manifest, xs: list[np.ndarray], ort_outputs: list[np.ndarray], runs: int) -> dict:
    """Runs the model with tract (Python bindings of the same Rust crates), input fact fixed
    to the manifest's shape as the Rust loader does."""
    import tract

    model = tract.onnx().load(str(m.path))
    model.set_input_fact(0, ",".join(str(d) for d in m.shape) + ",f32")
    runnable = model.into_model().into_runnable()
    diff = 0.0
    for x, ref in zip(xs, ort_outputs):
        got = runnable.run([x])[0].to_numpy()
        diff = max(diff, float(np.max(np.abs(got.astype(np.float64) - ref))))
    r = {"tract_version": tract.version(), "max_abs_diff_vs_onnxruntime": diff}
    if runs and xs:
        for _ in range(3):
            runnable.run([xs[0]])
        times = []
        for _ in range(runs):
            t0 = time.perf_counter()
            runnable.run([xs[0]])
            times.append((time.perf_counter() - t0) * 1000.0)
        r["latency"] = {"threads": 1, "runs": runs, "median_ms": round(statistics.median(times), 3),
                        "min_ms": round(min(times), 3)}
    return r


def versions() -> dict:
    import onnxruntime
    import PIL

    return {"python": platform.python_version(), "onnxruntime": onnxruntime.__version__,
            "numpy": np.__version__, "pillow": PIL.__version__}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model_dir")
    ap.add_argument("inputs", nargs="*", help="images (PNG/JPEG/...) or preprocessed .npy tensors")
    ap.add_argument("--save-inputs", metavar="DIR", help="write <image stem>.input.npy here")
    ap.add_argument("--save-only", metavar="NAME", action="append", default=[],
                    help="with --save-inputs: only for these image file names (repeatable)")
    ap.add_argument("--latency", type=int, metavar="RUNS", default=0)
    ap.add_argument("--threads", default="1,2", help="intra-op thread counts for --latency")
    ap.add_argument("--tract", action="store_true", help="cross-check with PyPI tract")
    ap.add_argument("--relative-to", metavar="DIR", help="print input paths relative to DIR")
    ap.add_argument("--out", metavar="FILE")
    a = ap.parse_args(argv)

    try:
        m = load_manifest(a.model_dir)
        check_model(m)
    except ManifestError as exc:
        print(f"reference_scores: {a.model_dir}: {exc}", file=sys.stderr)
        return 1
    try:
        sess = session(m)
    except Exception as exc:  # noqa: BLE001 - onnxruntime refuses the model (e.g. unknown op)
        print(f"reference_scores: {a.model_dir}: onnxruntime: {str(exc).splitlines()[0]}", file=sys.stderr)
        return 1
    results, xs, outs = [], [], []
    for p in a.inputs:
        path = Path(p)
        shown = os.path.relpath(path, a.relative_to) if a.relative_to else str(path)
        if path.suffix == ".npy":
            x = np.load(path)
            if x.dtype != np.float32 or list(x.shape) != m.shape:
                print(f"reference_scores: {p}: need float32 {m.shape}, got {x.dtype} {list(x.shape)}",
                      file=sys.stderr)
                return 1
            geo, entry = None, {"source": shown, "kind": "tensor"}
        else:
            x, geo = preprocess(path, m)
            entry = {"source": shown, "kind": "image", "image_size": [geo.src_w, geo.src_h],
                     "placed": {"scaled_size": [geo.scaled_w, geo.scaled_h],
                                "offset": [geo.offset_x, geo.offset_y]}}
            if a.save_inputs and (not a.save_only or path.name in a.save_only):
                dest = Path(a.save_inputs) / f"{path.stem}.input.npy"
                dest.parent.mkdir(parents=True, exist_ok=True)
                np.save(dest, x)
                entry["input_npy"] = os.path.relpath(dest, a.relative_to) if a.relative_to else str(dest)
        entry["input"] = {"shape": list(x.shape), "sha256": tensor_sha256(x), "min": float(x.min()),
                          "max": float(x.max()), "mean": float(x.astype(np.float64).mean())}
        entry.update(run_one(sess, m, x, geo))
        results.append(entry)
        xs.append(x)
        outs.append(np.asarray(entry["output"]["data"], dtype=np.float64).reshape(entry["output"]["shape"]))

    doc = {"model": {"name": m.name, "file": m.file, "sha256": m.sha256},
           "manifest": m.raw, "versions": versions(),
           "execution_provider": "CPUExecutionProvider", "results": results}
    doc["onnx_dims"] = onnx_io_dims(m)
    if a.latency:
        x = xs[0] if xs else np.zeros(m.shape, dtype=np.float32)
        threads = [int(t) for t in a.threads.split(",")]
        doc["latency"] = {
            "machine": f"{platform.machine()}, {os.cpu_count()} logical CPUs",
            "batch": 1, "onnxruntime": [latency(m, x, a.latency, t) for t in threads]}
        batch_dim = doc["onnx_dims"]["input"][m.input_name][0]
        if isinstance(batch_dim, str):
            # A symbolic batch dimension: measure a batch of 4 too (per-image cost).
            x4 = np.repeat(x, 4, axis=0)
            b4 = []
            for t in threads:
                r = latency(m, x4, max(a.latency // 4, 5), t)
                r["per_image_median_ms"] = round(r["median_ms"] / 4, 3)
                b4.append(r)
            doc["latency"]["onnxruntime_batch4"] = b4
    if a.tract:
        doc["tract"] = tract_check(m, xs, outs, a.latency)
    text = json.dumps(doc, indent=1) + "\n"
    if a.out:
        Path(a.out).write_text(text)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
