#!/usr/bin/env python3
"""False-positive calibration of a Firebreak classifier on benign content.

    calibrate.py MODEL_DIR [--out FILE] [--seconds N]

Scores every benign frame below with onnxruntime, preprocessed exactly as the manifest
says (reference_scores.py's normative preprocessing; tract's scores agree within 1e-4,
crates/classify/tests/models.rs), and reports for each category label the share of frames
at or above each threshold, the largest score per source group, and, for the video
sources, how many k-of-n windows (consecutive sampled frames, 2 per second) would enter at
each threshold for the k/n pairs given.

Benign sources (nothing here is or depicts real violence):
  photos     ../shared/conformance/pdq/images (real photographs and synthetic images)
  video      ../shared/conformance/vpdq/videos, sampled at 2 frames/s
  synthetic  FFmpeg's lavfi sources (testsrc2, smptehdbars, mandelbrot, life, cellauto,
             gradients, colour noise) at 2 frames/s, several seeds
  game       first-person "game-like" renders made here: a ray-cast maze corridor with a
             HUD and a held-tool sprite (a dark, barrel-like shape at the bottom centre, as
             first-person games draw the player's weapon), moving through the maze
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import reference_scores as rs  # noqa: E402

CONFORMANCE = HERE.parent.parent / "shared" / "conformance"
THRESHOLDS = [0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.8, 0.9]


def ffmpeg_frames(args: list[str], size=(320, 240)) -> list[np.ndarray]:
    w, h = size
    cmd = ["ffmpeg", "-v", "error", *args, "-vf", f"fps=2,scale={w}:{h}", "-f", "rawvideo", "-pix_fmt", "rgb24", "-"]
    raw = subprocess.run(cmd, check=True, capture_output=True).stdout
    n = len(raw) // (w * h * 3)
    return [np.frombuffer(raw[i * w * h * 3:(i + 1) * w * h * 3], np.uint8).reshape(h, w, 3) for i in range(n)]


def photos() -> list[tuple[str, np.ndarray]]:
    out = []
    for p in sorted((CONFORMANCE / "pdq" / "images").iterdir()):
        try:
            out.append((p.name, np.asarray(rs.load_rgb(p))))
        except Exception:  # noqa: BLE001 (a few conformance images are deliberately odd)
            continue
    return out


def videos(seconds: int) -> dict[str, list[np.ndarray]]:
    out = {}
    for p in sorted((CONFORMANCE / "vpdq" / "videos").glob("*.mp4")):
        out[p.name] = ffmpeg_frames(["-t", str(seconds), "-i", str(p)])
    return out


def synthetic(seconds: int) -> dict[str, list[np.ndarray]]:
    srcs = {
        "testsrc2": "testsrc2=size=320x240:rate=10",
        "smptehdbars": "smptehdbars=size=320x240:rate=10",
        "mandelbrot": "mandelbrot=size=320x240:rate=10",
        "life": "life=size=320x240:rate=10:seed=7:mold=10:ratio=0.3",
        "cellauto": "cellauto=size=320x240:rate=10:rule=110:seed=3",
        "gradients1": "gradients=size=320x240:rate=10:seed=1:speed=0.05",
        "gradients2": "gradients=size=320x240:rate=10:seed=2:speed=0.05",
        "noise": "color=c=gray:size=320x240:rate=10,noise=alls=80:allf=t+u",
    }
    return {k: ffmpeg_frames(["-f", "lavfi", "-t", str(seconds), "-i", v]) for k, v in srcs.items()}


MAZE = [
    "################",
    "#......#.......#",
    "#.####.#.#####.#",
    "#.#....#.....#.#",
    "#.#.########.#.#",
    "#.#..........#.#",
    "#.############.#",
    "#..............#",
    "################",
]


def render_fps(t: float, w=320, h=240, seed=0) -> np.ndarray:
    """One frame of a first-person walk through MAZE (a simple ray caster)."""
    rng = np.random.default_rng(seed)
    wall_colours = rng.integers(60, 200, size=(3, 3))
    # Walk along the bottom corridor and back, turning slowly.
    px, py = 1.5 + (t * 0.8) % 13, 7.5
    angle = 0.3 * np.sin(t * 0.7) + (np.pi if int(t * 0.8 / 13) % 2 else 0.0)
    img = np.zeros((h, w, 3), np.uint8)
    img[: h // 2] = (70 + seed * 10 % 60, 90, 140)  # sky/ceiling
    img[h // 2:] = (80, 70, 60)  # floor
    fov = np.pi / 3
    for x in range(w):
        a = angle - fov / 2 + fov * x / w
        dx, dy = np.cos(a), np.sin(a)
        dist, side = 0.0, 0
        while dist < 20:
            dist += 0.02
            cx, cy = int(px + dx * dist), int(py + dy * dist)
            if MAZE[cy % len(MAZE)][cx % len(MAZE[0])] == "#":
                side = (cx + cy) % 3
                break
        dist *= np.cos(a - angle)
        wall = int(min(h, h / max(dist, 0.1)))
        top = (h - wall) // 2
        shade = max(0.25, 1.0 - dist / 10)
        img[top:top + wall, x] = (wall_colours[side] * shade).astype(np.uint8)
    im = Image.fromarray(img)
    d = ImageDraw.Draw(im)
    # HUD: a health bar and an ammo counter.
    d.rectangle([8, h - 20, 88, h - 10], fill=(200, 30, 30))
    d.text((w - 60, h - 22), f"{int(50 + 40 * np.sin(t)):03d}", fill=(255, 255, 0))
    # The held tool: a dark barrel with a grip, bobbing as the player walks.
    bob = int(4 * np.sin(t * 6))
    cx = w // 2 + 30
    d.polygon([(cx - 10, h - 70 + bob), (cx + 10, h - 70 + bob), (cx + 22, h), (cx - 22, h)], fill=(45, 45, 50))
    d.rectangle([cx - 4, h - 90 + bob, cx + 4, h - 68 + bob], fill=(30, 30, 35))
    d.rectangle([cx + 8, h - 40 + bob, cx + 30, h], fill=(70, 50, 35))
    return np.asarray(im)


def game(seconds: int) -> dict[str, list[np.ndarray]]:
    return {f"fps-seed{s}": [render_fps(i / 2, seed=s) for i in range(seconds * 2)] for s in range(3)}


def score(sess, m, frames: list[np.ndarray]) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {}
    for f in frames:
        img, _ = rs.geometry_image(Image.fromarray(f), m)
        x = rs.normalise(np.asarray(img, np.uint8), m)
        raw = sess.run(None, {m.input_name: x})[0]
        for label, s in rs.label_scores(raw, m, None)[0].items():
            out.setdefault(label, []).append(float(s))
    return out


def k_of_n_entries(scores: list[float], enter: float, k: int, n: int) -> int:
    """Windows of n consecutive frames with at least k at or above `enter`."""
    hits = [s >= enter for s in scores]
    return sum(1 for i in range(len(hits)) if sum(hits[max(0, i - n + 1): i + 1]) >= k)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("model_dir")
    ap.add_argument("--out")
    ap.add_argument("--seconds", type=int, default=30)
    ap.add_argument("--k-of-n", default="1/1,2/4,3/5")
    a = ap.parse_args()
    m = rs.load_manifest(a.model_dir)
    sess = rs.session(m, threads=1)
    groups: dict[str, dict[str, list[np.ndarray]]] = {
        "photos": {"photos": [f for _, f in photos()]},
        "video": videos(a.seconds),
        "synthetic": synthetic(a.seconds),
        "game": game(a.seconds),
    }
    report = {"model": m.name, "sha256": m.sha256, "thresholds": THRESHOLDS, "groups": {}}
    kn = [tuple(int(v) for v in p.split("/")) for p in a.k_of_n.split(",")]
    for g, sources in groups.items():
        per_label: dict[str, list[float]] = {}
        entries: dict[str, dict[str, dict[str, int]]] = {}
        for name, frames in sources.items():
            s = score(sess, m, frames)
            for label, vals in s.items():
                per_label.setdefault(label, []).extend(vals)
                if g != "photos":
                    for k, n in kn:
                        for t in THRESHOLDS:
                            e = entries.setdefault(label, {}).setdefault(f"{k}/{n}", {})
                            e[str(t)] = e.get(str(t), 0) + k_of_n_entries(vals, t, k, n)
        report["groups"][g] = {
            label: {
                "frames": len(vals),
                "max": max(vals),
                "p99": float(np.percentile(vals, 99)),
                "at_or_above": {str(t): sum(v >= t for v in vals) for t in THRESHOLDS},
                **({"k_of_n_entries": entries[label]} if label in entries else {}),
            }
            for label, vals in per_label.items()
        }
    text = json.dumps(report, indent=1, sort_keys=True)
    if a.out:
        Path(a.out).write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
