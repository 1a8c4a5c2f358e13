#!/usr/bin/env python3
"""Hostile mix: good pushed streams in real time beside bad actors, against the release
daemon. Not a CI test (it needs a quiet machine and minutes); the figures go in notes.

    scripts/hostile-mix.py [--streams 20] [--seconds 60] [--slowloris 200]

Good tenant `platform`: N pushers, each PUTting 2 s 720p30 H.264 segments of its own
stream in real time. Bad actors, from other loopback addresses (127.0.0.2-5) so the
per-address throttle they trigger cannot touch the good pushers:
  - garbage: random bytes as segments of its own streams;
  - far sequence numbers (2^53 - 1, 2^63) and duplicates on its own stream;
  - slowloris: connections that send half a request head and stall;
  - another tenant pushing to, ending and deleting the good streams' ids;
  - credential guessing.
Reported: per good stream, segments accepted, frames sampled against the expected
2/s x duration, frames dropped or degraded, lag; the bad actors' answers by status; the
daemon's RSS over the run.
"""

import argparse
import hashlib
import http.client
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter

TOKENS = {
    "ingest": ("platform", "mix-ingest", '["ingest", "read"]'),
    "other": ("other", "mix-other", '["ingest", "operator"]'),
    "admin": ("ops", "mix-admin", '["admin"]'),
}


def sha(s):
    return hashlib.sha256(s.encode()).hexdigest()


def request(port, method, path, token=None, body=b"", source="127.0.0.1", timeout=30):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout, source_address=(source, 0))
    headers = {"Content-Length": str(len(body))}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    try:
        conn.request(method, path, body=body, headers=headers)
        r = conn.getresponse()
        data = r.read()
        return r.status, data
    except OSError as e:
        return f"error:{type(e).__name__}", b""
    finally:
        conn.close()


def rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def add_bin_argument(ap):
    """`--bin`: the release binary the daemon runs, in $CARGO_TARGET_DIR by default."""
    ap.add_argument("--bin", default=os.path.join(
        os.environ.get("CARGO_TARGET_DIR", "/var/cache/firebreak/target"), "release", "firebreak"))


def encode_segments(seg_dir, seconds, rate=()):
    """`seconds` of 720p30 H.264 (veryfast, keyframe every 2 s, `rate` options such as
    a bitrate) as 2 s MPEG-TS segments in `seg_dir`; returns their bytes in order."""
    os.makedirs(seg_dir, exist_ok=True)
    subprocess.run([
        "ffmpeg", "-v", "error", "-y", "-f", "lavfi",
        "-i", f"testsrc2=size=1280x720:rate=30:duration={seconds}",
        "-c:v", "libx264", "-preset", "veryfast", *rate, "-g", "60", "-keyint_min", "60",
        "-sc_threshold", "0", "-pix_fmt", "yuv420p",
        "-f", "segment", "-segment_time", "2", "-segment_format", "mpegts",
        os.path.join(seg_dir, "seg%03d.ts"),
    ], check=True)
    return [open(os.path.join(seg_dir, f), "rb").read() for f in sorted(os.listdir(seg_dir))]


def start_daemon(binary, work, config_text):
    """`binary run` on `work/firebreak.toml` holding `config_text` (stderr in
    `work/daemon.log`); returns the process and its port."""
    config = os.path.join(work, "firebreak.toml")
    with open(config, "w") as f:
        f.write(config_text)
    log = open(os.path.join(work, "daemon.log"), "w")
    daemon = subprocess.Popen([binary, "run", "--config", config], stdout=subprocess.PIPE,
                              stderr=log, text=True)
    port = int(daemon.stdout.readline().strip().rsplit(":", 1)[1])
    threading.Thread(target=lambda: daemon.stdout.read(), daemon=True).start()
    print(f"daemon pid {daemon.pid} on port {port}; log {log.name}", flush=True)
    return daemon, port


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--streams", type=int, default=20)
    ap.add_argument("--seconds", type=int, default=60)
    ap.add_argument("--slowloris", type=int, default=200)
    add_bin_argument(ap)
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="hostile-mix-")
    print(f"encoding {args.seconds} s of 720p30 into 2 s segments", flush=True)
    segments = encode_segments(os.path.join(work, "segments"), args.seconds)
    text = (f'data_dir = "{work}/data"\n[server]\nlisten = "127.0.0.1:0"\nmax_streams = 64\n'
            f'max_streams_per_tenant = 40\n[ingest]\nsampling = "2/s"\n')
    for tenant, token, scopes in TOKENS.values():
        text += f'[[auth.tokens]]\ntenant = "{tenant}"\ntoken_sha256 = "{sha(token)}"\nscopes = {scopes}\n'
    daemon, port = start_daemon(args.bin, work, text)

    ingest, other = TOKENS["ingest"][1], TOKENS["other"][1]
    stop = threading.Event()
    good_status = {i: Counter() for i in range(args.streams)}
    push_ms = []
    bad = Counter()
    rss = []
    t0 = time.monotonic()

    def pusher(i):
        sid = f"good-{i}"
        # Spread the streams' start over one segment duration.
        start = t0 + 2.0 * i / max(args.streams, 1)
        for seq, seg in enumerate(segments):
            delay = start + 2.0 * seq - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            t = time.monotonic()
            status, _ = request(port, "PUT", f"/v1/streams/{sid}/segments/{seq}", ingest, seg)
            push_ms.append((time.monotonic() - t) * 1000)
            good_status[i][status] += 1
        request(port, "POST", f"/v1/streams/{sid}/end", ingest)

    def garbage():
        n = 0
        while not stop.is_set():
            for k in range(3):
                status, _ = request(port, "PUT", f"/v1/streams/junk-{n}/segments/{k}", other,
                                    os.urandom(200_000), source="127.0.0.2")
                bad[f"garbage {status}"] += 1
            request(port, "POST", f"/v1/streams/junk-{n}/end", other, source="127.0.0.2")
            n += 1
            stop.wait(2.0)

    def far_sequences():
        request(port, "PUT", "/v1/streams/far/segments/0", other, segments[0], source="127.0.0.3")
        while not stop.is_set():
            for seq in (2**53 - 1, 2**63, 0, 0):
                status, _ = request(port, "PUT", f"/v1/streams/far/segments/{seq}", other,
                                    segments[0], source="127.0.0.3")
                bad[f"far/dup seq {status}"] += 1
            stop.wait(1.0)

    def foreign_ids():
        # Once every good stream has its first segment in: the ids are taken.
        stop.wait(4.0)
        while not stop.is_set():
            i = random.randrange(args.streams)
            for method, path, body in (
                ("PUT", f"/v1/streams/good-{i}/segments/0", b"junk"),
                ("POST", f"/v1/streams/good-{i}/end", b""),
                ("DELETE", f"/v1/streams/good-{i}", b""),
                ("GET", f"/v1/streams/good-{i}", b""),
            ):
                status, _ = request(port, method, path, other, body, source="127.0.0.4")
                bad[f"other tenant {method} {status}"] += 1
            stop.wait(0.5)

    def guessing():
        while not stop.is_set():
            status, _ = request(port, "GET", "/v1/streams", f"guess-{random.random()}",
                                source="127.0.0.5")
            bad[f"guess {status}"] += 1
            stop.wait(0.2)

    slow = []

    def slowloris():
        for _ in range(args.slowloris):
            try:
                s = socket.create_connection(("127.0.0.1", port), timeout=5,
                                             source_address=("127.0.0.6", 0))
                s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
                slow.append(s)
            except OSError as e:
                bad[f"slowloris connect {type(e).__name__}"] += 1
        while not stop.is_set():
            alive = 0
            for s in slow:
                try:
                    s.sendall(b"a")
                    alive += 1
                except OSError:
                    pass
            bad["slowloris connections open (max)"] = max(
                bad["slowloris connections open (max)"], alive)
            bad["slowloris connections open (at the end)"] = alive
            stop.wait(1.0)

    def sampler():
        while not stop.is_set():
            rss.append((time.monotonic() - t0, rss_mib(daemon.pid)))
            stop.wait(1.0)

    pushers = [threading.Thread(target=pusher, args=(i,)) for i in range(args.streams)]
    helpers = [threading.Thread(target=f, daemon=True)
               for f in (garbage, far_sequences, foreign_ids, guessing, slowloris, sampler)]
    for t in helpers + pushers:
        t.start()
    for t in pushers:
        t.join()
    # Let the decoders drain, then read the streams.
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        status, body = request(port, "GET", "/v1/streams", TOKENS["admin"][1])
        streams = {s["id"]: s for s in json.loads(body)["streams"]} if status == 200 else {}
        if all(streams.get(f"good-{i}", {}).get("state") in ("ended", "failed")
               for i in range(args.streams)):
            break
        time.sleep(0.5)
    stop.set()
    elapsed = time.monotonic() - t0

    expected = 2 * 2 * len(segments)
    print(f"\n{args.streams} good streams x {len(segments)} segments (2 s 720p30), "
          f"{elapsed:.0f} s; expected ~{expected} sampled frames each")
    kept_up = 0
    for i in range(args.streams):
        s = streams.get(f"good-{i}", {})
        sampled = s.get("frames", {}).get("sampled", 0)
        dropped = s.get("frames", {}).get("dropped", {}).get("queue_full", 0)
        ok = (s.get("state") == "ended" and good_status[i].get(200, 0) == len(segments)
              and sampled >= 0.95 * expected and s.get("degraded", 0) == 0)
        kept_up += ok
        print(f"  good-{i:<3} {s.get('state','?'):<7} puts {dict(good_status[i])} sampled {sampled} "
              f"dropped {dropped} degraded {s.get('degraded')} decode_errors {s.get('decode_errors')} "
              f"{'kept up' if ok else 'BEHIND'}")
    push_ms.sort()
    if push_ms:
        print(f"segment PUT latency ms: p50 {push_ms[len(push_ms)//2]:.0f} "
              f"p99 {push_ms[int(len(push_ms)*0.99)]:.0f} max {push_ms[-1]:.0f}")
    print(f"good streams that kept up: {kept_up}/{args.streams}")
    print("bad actors' answers:")
    for k, v in sorted(bad.items()):
        print(f"  {k}: {v}")
    peak = max(r for _, r in rss) if rss else 0
    print(f"daemon RSS MiB: start {rss[0][1]:.0f}, peak {peak:.0f}, end {rss[-1][1]:.0f}")
    alive = daemon.poll() is None
    print(f"daemon still running: {alive}")
    daemon.terminate()
    daemon.wait(timeout=60)
    for s in slow:
        s.close()
    return 0 if alive and kept_up == args.streams else 1


if __name__ == "__main__":
    sys.exit(main())
