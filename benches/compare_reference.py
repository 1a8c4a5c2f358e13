"""Side-by-side speed of Firebreak and Meta's reference PDQ / vPDQ, in one run.

PDQ: the same RGB pixels go to pdqhash.compute (C++ through Python, one thread) and to
Firebreak's `pdq_throughput` (one thread); both report the hash, which must agree.
vPDQ: the same 60 s 720p30 H.264 file goes to vpdq.computeHash and to
`firebreak hash vpdq`, one hash per second; wall-clock time, best of several runs.
"""

import os
import subprocess
import sys
import tempfile
import time

import numpy as np
import pdqhash
import vpdq

TARGET = sys.argv[1]
BIN = os.path.join(TARGET, "release")
MEDIA = os.path.join(TARGET, "bench-media")
RUNS = 3


def photo_like(w, h, seed):
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    base = 0.5 + 0.3 * np.sin(6 * x / w + seed) * np.cos(4 * y / h - seed)
    blob = np.exp(-(((x / w) - 0.3) ** 2 + ((y / h) - 0.6) ** 2) * 20)
    noise = rng.random((h, w)).astype(np.float32) * 0.05
    chans = [np.clip(base + k * blob + noise, 0, 1) for k in (0.4, 0.1, -0.3)]
    return (np.stack(chans, axis=-1) * 255).astype(np.uint8)


def ref_hex(bits):
    return "{:064x}".format(int("".join(str(int(b)) for b in bits), 2))


def bench_pdq():
    print("PDQ, one thread, same pixels")
    for w, h in [(640, 480), (1280, 720)]:
        img = photo_like(w, h, 7)
        n = 200 if w < 1000 else 80
        bits, q = pdqhash.compute(img)
        ref_times = []
        for _ in range(RUNS):
            t = time.perf_counter()
            for _ in range(n):
                pdqhash.compute(img)
            ref_times.append((time.perf_counter() - t) / n)
        with tempfile.NamedTemporaryFile(suffix=".rgb") as f:
            f.write(np.ascontiguousarray(img).tobytes())
            f.flush()
            fb_times = []
            for _ in range(RUNS):
                out = subprocess.check_output(
                    [os.path.join(BIN, "pdq_throughput"), f.name, str(w), str(h), str(n * 4)], text=True
                ).strip()
                fb_hex, fb_q, per = out.split(",")
                fb_times.append(float(per))
        ref, fb = min(ref_times), min(fb_times)
        same = fb_hex == ref_hex(bits) and int(fb_q) == q
        print(
            f"  {w}x{h}: reference {ref * 1e3:.3f} ms/hash ({1 / ref:.0f}/s), firebreak "
            f"{fb * 1e3:.3f} ms/hash ({1 / fb:.0f}/s), ratio {ref / fb:.2f}x, same hash: {same}"
        )


def ensure_video():
    path = os.path.join(MEDIA, "testsrc2-720p30-60s.mp4")
    if not os.path.exists(path):
        os.makedirs(MEDIA, exist_ok=True)
        subprocess.check_call(
            ["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi", "-i",
             "testsrc2=size=1280x720:rate=30:duration=60", "-c:v", "libx264", "-preset", "veryfast",
             "-g", "60", "-pix_fmt", "yuv420p", path]
        )
    return path


def best_of(fn):
    times = []
    result = None
    for _ in range(RUNS):
        t = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t)
    return min(times), result


def bench_vpdq():
    video = ensure_video()
    print("vPDQ, 60 s 1280x720 30 fps H.264, one hash per second (wall clock, best of %d)" % RUNS)
    for threads in (1, 0):
        ref_t, ref = best_of(lambda: vpdq.computeHash(video, seconds_per_hash=1, thread_count=threads))
        ref_lines = [f"{f.frame_number},{f.quality},{f.hex},{f.timestamp:.3f}" for f in ref]

        def ours(conversion):
            return subprocess.check_output(
                [os.path.join(BIN, "firebreak"), "hash", "vpdq", "-r", "1", "--threads", str(threads),
                 "--conversion", conversion, video], text=True
            )

        fb_t, fb_native = best_of(lambda: ours("native"))
        fb_ref_t, _ = best_of(lambda: ours("reference"))
        same = fb_native.splitlines() == ref_lines
        label = "1 decoder thread" if threads == 1 else "auto threads"
        print(
            f"  {label}: reference {ref_t:.2f} s, firebreak {fb_t:.2f} s (native conversion, "
            f"same output as reference: {same}), {fb_ref_t:.2f} s (C-path conversion); "
            f"ratio {ref_t / fb_t:.2f}x"
        )


if __name__ == "__main__":
    bench_pdq()
    bench_vpdq()
