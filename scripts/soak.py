#!/usr/bin/env python3
"""Soak (issue 15): pushed 720p30 streams in real time at about 80 % of the measured
capacity, each ending and a new one starting under a new id, for a long run. Not a CI
test (it needs a quiet machine and half an hour); the figures go in notes.

    scripts/soak.py [--slots 19] [--minutes 30] [--stream-seconds 60] [--bin PATH]

Capacity: one `firebreak run` keeps up with 12 live 720p30 streams per core at
2 samples/s, so 19 slots on 2 cores is 80 %. Each slot pushes its stream's 2 s segments
in real time, ends it, waits for it to end, records its figures and starts the next
stream under a new id, until the time is up. Reported: per stream, whether it kept up
(every segment answered 200, at least 95 % of the 2/s x duration frames sampled, none
dropped, never degraded); the daemon's resident memory, threads and open files over
the run (sampled every 10 s), and once every stream has ended. Loopback only; the
daemon is stopped at the end. Exit status 0 when every stream kept up and the daemon
ran to the end.
"""

import argparse
import importlib.util
import json
import os
import sys
import tempfile
import threading
import time

_spec = importlib.util.spec_from_file_location(
    "hostile_mix", os.path.join(os.path.dirname(os.path.abspath(__file__)), "hostile-mix.py"))
mix = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(mix)


def proc_figures(pid):
    """(RSS MiB, threads, open files) of `pid`."""
    rss, threads = 0.0, 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1]) / 1024
            elif line.startswith("Threads:"):
                threads = int(line.split()[1])
    return rss, threads, len(os.listdir(f"/proc/{pid}/fd"))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--slots", type=int, default=19)
    ap.add_argument("--minutes", type=float, default=30)
    ap.add_argument("--stream-seconds", type=int, default=60)
    mix.add_bin_argument(ap)
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="soak-")
    print(f"encoding {args.stream_seconds} s of 720p30 into 2 s segments", flush=True)
    segments = mix.encode_segments(os.path.join(work, "segments"), args.stream_seconds)
    token = "soak-ingest"
    # Room for ended streams' summaries and for every slot's polling under the
    # tenant's request rate.
    daemon, port = mix.start_daemon(args.bin, work, (
        f'data_dir = "{work}/data"\n[server]\nlisten = "127.0.0.1:0"\nmax_streams = 512\n'
        f'max_streams_per_tenant = 64\ntenant_requests_per_sec = 10000\n'
        f'tenant_request_burst = 10000\n[ingest]\nsampling = "2/s"\n'
        f'[[auth.tokens]]\ntenant = "platform"\ntoken_sha256 = "{mix.sha(token)}"\n'
        f'scopes = ["ingest", "read"]\n'))
    baseline = proc_figures(daemon.pid)

    t0 = time.monotonic()
    deadline = t0 + args.minutes * 60
    expected = 2 * 2 * len(segments)
    results = []
    lock = threading.Lock()
    stop = threading.Event()
    samples = []

    def slot(k):
        n = 0
        # Spread the slots' starts over one segment duration.
        start = t0 + 2.0 * k / max(args.slots, 1)
        while start + 2.0 * len(segments) <= deadline:
            sid = f"soak-{k}-{n}"
            puts = {}
            for seq, seg in enumerate(segments):
                delay = start + 2.0 * seq - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                status, _ = mix.request(port, "PUT", f"/v1/streams/{sid}/segments/{seq}", token, seg)
                puts[status] = puts.get(status, 0) + 1
            mix.request(port, "POST", f"/v1/streams/{sid}/end", token)
            s = {}
            for _ in range(600):
                status, body = mix.request(port, "GET", f"/v1/streams/{sid}", token)
                s = json.loads(body) if status == 200 else {}
                if s.get("state") in ("ended", "failed"):
                    break
                time.sleep(0.1)
            frames = s.get("frames", {})
            ok = (s.get("state") == "ended" and puts.get(200, 0) == len(segments)
                  and frames.get("sampled", 0) >= 0.95 * expected
                  and frames.get("dropped", {}).get("queue_full", 0) == 0
                  and s.get("degraded", 0) == 0)
            with lock:
                results.append((sid, ok, puts, s.get("state"), frames.get("sampled"),
                                frames.get("dropped", {}).get("queue_full"), s.get("degraded"),
                                s.get("lag_ms")))
            n += 1
            start = time.monotonic()

    def sampler():
        while not stop.is_set():
            samples.append((time.monotonic() - t0, *proc_figures(daemon.pid)))
            print(f"  {samples[-1][0]:6.0f} s  RSS {samples[-1][1]:6.0f} MiB  threads "
                  f"{samples[-1][2]:4d}  files {samples[-1][3]:4d}  streams done {len(results)}",
                  flush=True)
            stop.wait(10.0)

    threading.Thread(target=sampler, daemon=True).start()
    slots = [threading.Thread(target=slot, args=(k,)) for k in range(args.slots)]
    for t in slots:
        t.start()
    for t in slots:
        t.join()
    stop.set()
    # Every stream has ended: what the daemon holds now.
    time.sleep(2.0)
    after = proc_figures(daemon.pid)
    elapsed = time.monotonic() - t0

    kept_up = sum(1 for r in results if r[1])
    print(f"\n{args.slots} slots, {len(results)} streams of {len(segments)} segments "
          f"(2 s 720p30) in {elapsed / 60:.1f} min; expected ~{expected} sampled frames each")
    for r in results:
        if not r[1]:
            print(f"  BEHIND {r[0]}: puts {r[2]} state {r[3]} sampled {r[4]} dropped {r[5]} "
                  f"degraded {r[6]} lag_ms {r[7]}")
    print(f"streams that kept up: {kept_up}/{len(results)}")
    minute = [s for s in samples if s[0] >= 60] or samples
    print(f"daemon before any stream: RSS {baseline[0]:.0f} MiB, threads {baseline[1]}, "
          f"files {baseline[2]}")
    print(f"daemon RSS MiB after the first minute {minute[0][1]:.0f}, at the end of the run "
          f"{samples[-1][1]:.0f}, peak {max(s[1] for s in samples):.0f}")
    for mark in (5, 10, 15, 20, 25, 30):
        at = [s for s in samples if s[0] >= mark * 60]
        if at:
            print(f"  at {mark:2d} min: RSS {at[0][1]:.0f} MiB, threads {at[0][2]}, files {at[0][3]}")
    print(f"daemon once every stream ended: RSS {after[0]:.0f} MiB, threads {after[1]}, "
          f"files {after[2]}")
    alive = daemon.poll() is None
    print(f"daemon still running: {alive}")
    daemon.terminate()
    daemon.wait(timeout=60)
    return 0 if alive and results and kept_up == len(results) else 1


if __name__ == "__main__":
    sys.exit(main())
