#!/usr/bin/env python3
"""The monitor's own limit (issue 20): K live 720p30 streams (4 Mbit/s) pushed in real
time into one release `firebreak run`, and the ffmpeg CLI decoding the same segments
on one thread in the same run, for reference.

    benches/live_capacity.py [--streams 16] [--seconds 60] [--mode 2/s|keyframes]
                             [--max-frame WxH] [--bin PATH]

Reported (one JSON line per side): the daemon's CPU seconds (user + system, from
/proc) per stream-second of video while the streams run, and so the streams one core
keeps up with (1 / that); whether every stream kept up (every segment answered 200,
at least 95 % of the frames it should sample, none dropped, never degraded); the
segment-to-sample lag (p50/p99 of each stream's last `lag_ms`); the daemon's peak
resident memory. For the reference,
`ffmpeg -threads 1 [-skip_frame nokey] -i SEGMENTS -f null -` on the concatenated
segments: wall seconds per video second, and the streams one core decodes.
Loopback only; needs a quiet machine (two cores: keep K under what one core takes).
"""

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import threading
import time

_here = os.path.dirname(os.path.abspath(__file__))
_spec = importlib.util.spec_from_file_location(
    "hostile_mix", os.path.join(_here, "..", "scripts", "hostile-mix.py"))
mix = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(mix)

TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid):
    """User + system CPU seconds of `pid` so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def peak_rss_kib(pid):
    """The peak resident set of `pid` so far (VmHWM), in KiB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmHWM for pid {pid}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--streams", type=int, default=16)
    ap.add_argument("--seconds", type=int, default=60)
    ap.add_argument("--mode", choices=["2/s", "keyframes"], default="2/s")
    ap.add_argument("--max-frame", default="1280x720",
                    help="[ingest] max_frame: frames larger are scaled down before the detectors")
    mix.add_bin_argument(ap)
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="live-capacity-")
    segments = mix.encode_segments(os.path.join(work, "segments"), args.seconds,
                                   ("-b:v", "4M", "-maxrate", "4M", "-bufsize", "8M"))
    whole = os.path.join(work, "whole.ts")
    with open(whole, "wb") as f:
        for s in segments:
            f.write(s)
    media = 2.0 * len(segments)

    # The reference first, alone on the machine.
    cmd = ["ffmpeg", "-v", "error", "-threads", "1"]
    if args.mode == "keyframes":
        cmd += ["-skip_frame", "nokey"]
    t = time.monotonic()
    subprocess.run(cmd + ["-i", whole, "-f", "null", "-"], check=True)
    wall = time.monotonic() - t
    print(json.dumps({"side": "ffmpeg-cli", "mode": args.mode, "wall_s": round(wall, 3),
                      "video_s": media, "streams_per_core": round(media / wall, 1)}), flush=True)

    token = "capacity-ingest"
    sampling = "2/s" if args.mode == "2/s" else "keyframes"
    max_w, max_h = (int(v) for v in args.max_frame.split("x"))
    daemon, port = mix.start_daemon(args.bin, work, (
        f'data_dir = "{work}/data"\n[server]\nlisten = "127.0.0.1:0"\n'
        f'max_streams = {args.streams + 8}\nmax_streams_per_tenant = {args.streams + 8}\n'
        f'tenant_requests_per_sec = 10000\ntenant_request_burst = 10000\n'
        f'[ingest]\nsampling = "{sampling}"\nmax_frame = [{max_w}, {max_h}]\n'
        f'[[auth.tokens]]\ntenant = "platform"\ntoken_sha256 = "{mix.sha(token)}"\n'
        f'scopes = ["ingest", "read"]\n'))

    statuses = [dict() for _ in range(args.streams)]
    t0 = time.monotonic() + 1.0

    def pusher(i):
        start = t0 + 2.0 * i / args.streams
        for seq, seg in enumerate(segments):
            delay = start + 2.0 * seq - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            status, _ = mix.request(port, "PUT", f"/v1/streams/cap-{i}/segments/{seq}", token, seg)
            statuses[i][status] = statuses[i].get(status, 0) + 1
        mix.request(port, "POST", f"/v1/streams/cap-{i}/end", token)

    cpu0 = cpu_seconds(daemon.pid)
    threads = [threading.Thread(target=pusher, args=(i,)) for i in range(args.streams)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    streams = {}
    for _ in range(600):
        status, body = mix.request(port, "GET", "/v1/streams", token)
        streams = {s["id"]: s for s in json.loads(body)["streams"]} if status == 200 else {}
        if all(streams.get(f"cap-{i}", {}).get("state") in ("ended", "failed")
               for i in range(args.streams)):
            break
        time.sleep(0.1)
    cpu = cpu_seconds(daemon.pid) - cpu0
    peak_rss_mb = peak_rss_kib(daemon.pid) // 1024
    daemon.terminate()
    daemon.wait(timeout=60)

    expected = 2 * media if args.mode == "2/s" else media / 2.0
    kept_up, lags = 0, []
    for i in range(args.streams):
        s = streams.get(f"cap-{i}", {})
        frames = s.get("frames", {})
        ok = (s.get("state") == "ended" and statuses[i].get(200, 0) == len(segments)
              and frames.get("sampled", 0) >= 0.95 * expected
              and frames.get("dropped", {}).get("queue_full", 0) == 0
              and s.get("degraded", 0) == 0)
        kept_up += ok
        if s.get("lag_ms") is not None:
            lags.append(s["lag_ms"])
    lags.sort()
    per_stream_second = cpu / (args.streams * media)
    print(json.dumps({
        "side": "firebreak", "mode": args.mode, "max_frame": args.max_frame,
        "streams": args.streams, "video_s": media,
        "cpu_s": round(cpu, 2), "cpu_ms_per_stream_second": round(1000 * per_stream_second, 2),
        "streams_per_core": round(1 / per_stream_second, 1),
        "kept_up": f"{kept_up}/{args.streams}", "peak_rss_mb": peak_rss_mb,
        "lag_ms_p50": lags[len(lags) // 2] if lags else None,
        "lag_ms_p99": lags[int(len(lags) * 0.99)] if lags else None,
    }), flush=True)
    return 0 if kept_up == args.streams else 1


if __name__ == "__main__":
    sys.exit(main())
