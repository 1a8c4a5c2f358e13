"""Firebreak's exact PDQ Hamming-range index against FAISS, on the same data.

Subcommands (driven by benches/index_compare.sh, usable by hand):

  gen    --out DIR [--n 10000000] [--queries 1000] [--seed 7]
  truth  --dir DIR [--distance 31] [--limit-queries Q]
  faiss  --dir DIR [--distance 31] [--flat-queries 200] [--multihash NH:B:NFLIP ...] [--hash B:NFLIP ...]
  report --firebreak FILE.json --faiss FILE.json

Files in DIR
------------
hashes.bin    N rows of 32 bytes; row i is hash i in hex order (bytes.fromhex(hex)).
queries.bin   Q rows of 32 bytes, same layout.
query_kinds.txt  one line per query: variant | copy | random (see below).
params.json   the gen parameters (n, queries, seed, model constants).
truth.txt     one line per query (or per query of the first --limit-queries): the sorted,
              space-separated row indices within Hamming distance <= --distance; empty line if none.
truth.json    distance and number of queries that truth.txt was written for.

Corpus model (gen)
------------------
A synthetic but *clustered* stand-in for a real PDQ corpus, where near-duplicates cluster around
an original and some 16-bit words are far more common than others:

* C = max(1, N // 10) cluster centres, each 256 uniform random bits.
* Skewed words: for every one of the 16 word positions (bytes 2p, 2p+1, big-endian, i.e. hex
  characters 4p..4p+3) there are 4 "popular" 16-bit words. 20% of the centres are "skewed":
  in each word position, independently with probability 1/2, the centre's word is replaced by one
  of that position's popular words, chosen with weights 0.55 / 0.25 / 0.12 / 0.08. (Real PDQ
  corpora have such words, e.g. from flat or near-flat images; they make hash buckets of
  multi-index structures uneven, which is what this is meant to exercise.)
* Each stored hash picks a centre uniformly at random (so clusters hold about 10 hashes,
  Poisson-distributed) and flips k bits of it: k ~ uniform{0..40} for 90% of the hashes and
  k ~ uniform{41..64} for the other 10% (far members of a cluster that are not near-duplicates).
  The k positions are drawn with replacement, so the actual distance to the centre is k minus a
  few collisions (about 3 at k = 40); k = 0 gives an exact copy of the centre.
* Queries, in a seeded random order: half are fresh variants of random centres
  (k ~ uniform{0..40}, same flipping), a quarter are exact copies of random stored rows, and the
  rest are uniform random 256-bit hashes (which almost never have a neighbour within 31).

Everything comes from one numpy Generator seeded by --seed, processed in fixed-size chunks, so
the files depend only on (n, queries, seed). Bit order inside a byte does not matter for
Hamming distance, so FAISS can take the raw rows as its uint8 binary codes.

FAISS semantics worth knowing (checked at run time where it matters)
--------------------------------------------------------------------
* Binary range_search returns distances *strictly below* the radius it is given (for
  IndexBinaryFlat, IndexBinaryHash and IndexBinaryMultiHash alike). To get "<= distance" we pass
  radius = distance + 1; `radius_for` probes this on a tiny index rather than assuming it.
* IndexBinaryMultiHash(d, nhash, b) hashes nhash disjoint b-bit substrings (bits [h*b, (h+1)*b),
  little-endian within the byte string), probes every bucket within `nflip` bits of the query's
  substring in each table, then verifies the union exactly against the stored codes. By
  pigeonhole it is exact for distance r iff nhash*b == d and nhash*(nflip+1) > r; for r = 31:
  16x16 with nflip = 1, 8x32 with nflip = 3, or 32x8 with nflip = 0. nflip defaults to 0, so
  16x16 out of the box is *not* exact for 31 (a match whose 16 words all differ by >= 1 bit,
  e.g. 15 words x 2 bits + 1 word x 1 bit, is missed). With b = 16 the tables are keyed on the
  very 16-bit words the skewed centres make popular.
* IndexBinaryHash(d, b) is one table keyed on the *first* b bits only, probing buckets within
  nflip bits of them; it can only be exact with nflip >= min(b, r) (scanning everything), so it is
  approximate by construction here and reported with its recall.
* Both hash indexes collect candidates in a std::unordered_set before verifying, and keep one
  std::vector of int64 ids per bucket per table, so build and memory are dominated by hash maps.

Configurations (defaults of `faiss`), measured at N = 10M, 1000 queries, one thread, on the
2-core build machine while another build was running (so only roughly):
  flat                  build 0.2 s,  p50 37 ms (first 200 queries),   32 B/hash
  MultiHash 16x16 f1    build 35 s,   p50 49 ms, p99 1.7 s,  exact,   266 B/hash, ~168k candidates/query
  MultiHash 8x32  f3    build 190 s,  p50 16 ms, p99 98 ms,  exact,   672 B/hash, ~9k candidates/query
  (MultiHash 16x16 f0   build 32 s,   p50 13 ms, p99 1.1 s,  recall 0.985 - not exact, not a default)
  (MultiHash 32x8 f0    exact, but ~1.25M candidates/query at 10M - slower than flat, not a default)
  Hash b16 f2 / b24 f3  build 2.5 / 15 s, p50 0.3 / 0.4 ms, recall ~0.86 (approximate)
16x16 suffers from the popular words (the largest bucket of each 16-bit position holds ~1.8% of
the corpus); 8x32 f3 probes 8 * 5489 buckets but they are nearly empty. `multihash_best` in the
output is the exact configuration with the lowest p50, which is what the report's ratios use.
The whole `faiss` step takes about 10 minutes and ~7 GB peak RSS (8x32 f3) at 10M.
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import numpy as np

CODE_BYTES = 32
D_BITS = 256
CHUNK = 1 << 20  # fixed, so generation is deterministic independent of machine size

CENTRE_DIVISOR = 10
SKEWED_CENTRE_FRACTION = 0.20
POPULAR_PER_POSITION = 4
POPULAR_WEIGHTS = [0.55, 0.25, 0.12, 0.08]
POPULAR_WORD_PROB = 0.5
NEAR_FLIPS_MAX = 40
FAR_FRACTION = 0.10
FAR_FLIPS = (41, 64)

DEFAULT_MULTIHASH = ["16:16:1", "8:32:3"]
DEFAULT_HASH = ["16:2", "24:3"]


def log(msg):
    print(msg, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# gen


def flip_bits(rng, rows, k):
    """rows (m, 32) uint8 with k[i] bit positions of row i set to flip (drawn with replacement)."""
    m = rows.shape[0]
    total = int(k.sum())
    mask = np.zeros(m * D_BITS, dtype=bool)
    if total:
        row_of = np.repeat(np.arange(m, dtype=np.int64) * D_BITS, k)
        row_of += rng.integers(0, D_BITS, size=total, dtype=np.int64)
        mask[row_of] = True
    return rows ^ np.packbits(mask.reshape(m, D_BITS), axis=1)


def near_flip_counts(rng, m):
    return rng.integers(0, NEAR_FLIPS_MAX + 1, size=m, dtype=np.int64)


def cmd_gen(args):
    t0 = time.perf_counter()
    n, nq = args.n, args.queries
    rng = np.random.default_rng(args.seed)
    os.makedirs(args.out, exist_ok=True)

    n_centres = max(1, n // CENTRE_DIVISOR)
    centres = rng.integers(0, 256, size=(n_centres, CODE_BYTES), dtype=np.uint8)

    # Popular 16-bit words, per word position: (16 positions, 4 words, 2 bytes).
    popular = rng.integers(0, 256, size=(CODE_BYTES // 2, POPULAR_PER_POSITION, 2), dtype=np.uint8)
    skewed = np.flatnonzero(rng.random(n_centres) < SKEWED_CENTRE_FRACTION)
    words = centres.reshape(n_centres, CODE_BYTES // 2, 2)
    replace = rng.random((skewed.size, CODE_BYTES // 2)) < POPULAR_WORD_PROB
    choice = rng.choice(POPULAR_PER_POSITION, size=(skewed.size, CODE_BYTES // 2), p=POPULAR_WEIGHTS)
    pos = np.broadcast_to(np.arange(CODE_BYTES // 2), choice.shape)
    sk_words = words[skewed]  # copy
    sk_words[replace] = popular[pos[replace], choice[replace]]
    words[skewed] = sk_words

    hashes = np.empty((n, CODE_BYTES), dtype=np.uint8)
    for start in range(0, n, CHUNK):
        m = min(CHUNK, n - start)
        which = rng.integers(0, n_centres, size=m, dtype=np.int64)
        k = near_flip_counts(rng, m)
        far = rng.random(m) < FAR_FRACTION
        k[far] = rng.integers(FAR_FLIPS[0], FAR_FLIPS[1] + 1, size=int(far.sum()), dtype=np.int64)
        hashes[start:start + m] = flip_bits(rng, centres[which], k)

    n_var = nq // 2
    n_copy = nq // 4
    n_rand = nq - n_var - n_copy
    q_var = flip_bits(rng, centres[rng.integers(0, n_centres, size=n_var)], near_flip_counts(rng, n_var))
    q_copy = hashes[rng.integers(0, n, size=n_copy)]
    q_rand = rng.integers(0, 256, size=(n_rand, CODE_BYTES), dtype=np.uint8)
    queries = np.concatenate([q_var, q_copy, q_rand])
    kinds = np.array(["variant"] * n_var + ["copy"] * n_copy + ["random"] * n_rand)
    order = rng.permutation(nq)
    queries, kinds = queries[order], kinds[order]

    hashes.tofile(os.path.join(args.out, "hashes.bin"))
    queries.tofile(os.path.join(args.out, "queries.bin"))
    with open(os.path.join(args.out, "query_kinds.txt"), "w") as f:
        f.write("".join(k + "\n" for k in kinds))
    params = {
        "n": n, "queries": nq, "seed": args.seed, "centres": n_centres, "skewed_centres": int(skewed.size),
        "skewed_centre_fraction": SKEWED_CENTRE_FRACTION, "popular_per_position": POPULAR_PER_POSITION,
        "popular_weights": POPULAR_WEIGHTS, "popular_word_prob": POPULAR_WORD_PROB,
        "near_flips_max": NEAR_FLIPS_MAX, "far_fraction": FAR_FRACTION, "far_flips": list(FAR_FLIPS),
    }
    with open(os.path.join(args.out, "params.json"), "w") as f:
        json.dump(params, f, indent=1)
        f.write("\n")
    log(f"gen: {n} hashes ({n_centres} centres, {skewed.size} skewed), {nq} queries "
        f"-> {args.out} in {time.perf_counter() - t0:.1f} s, peak RSS {peak_rss_bytes() / 2**20:.0f} MiB")


# ---------------------------------------------------------------------------------------------
# shared helpers


def load_codes(path):
    raw = np.fromfile(path, dtype=np.uint8)
    if raw.size % CODE_BYTES:
        sys.exit(f"{path}: size {raw.size} is not a multiple of {CODE_BYTES}")
    return raw.reshape(-1, CODE_BYTES)


def load_truth(path):
    with open(path) as f:
        return [np.array(line.split(), dtype=np.int64) for line in f.read().split("\n")[:-1]]


def radius_for(distance):
    """The radius to pass to FAISS binary range_search so that it returns distance <= `distance`.

    Builds rows at exactly distance-1, distance and distance+1 from a query and looks at what
    range_search(radius=distance) returns: FAISS (as of 1.x) is strict, so the answer is
    distance + 1; if a future version turns inclusive, this returns distance.
    """
    import faiss

    rng = np.random.default_rng(0)
    q = rng.integers(0, 256, size=(1, CODE_BYTES), dtype=np.uint8)
    bits = np.repeat(np.unpackbits(q, axis=1), 3, axis=0)
    for row, k in enumerate((distance - 1, distance, distance + 1)):
        bits[row, :k] ^= 1
    rows = np.packbits(bits, axis=1)
    index = faiss.IndexBinaryFlat(D_BITS)
    index.add(rows)

    def got(radius):
        _, dist, ids = index.range_search(q, radius)
        return sorted(zip(ids.tolist(), dist.astype(int).tolist()))

    at_distance = got(distance)
    if at_distance == [(0, distance - 1)]:
        radius = distance + 1  # strict: distances < radius
    elif at_distance == [(0, distance - 1), (1, distance)]:
        radius = distance  # inclusive
    else:
        raise RuntimeError(f"unexpected FAISS range_search semantics: {at_distance}")
    if got(radius) != [(0, distance - 1), (1, distance)]:
        raise RuntimeError(f"FAISS radius {radius} does not give exactly <= {distance}: {got(radius)}")
    return radius


def rss_status():
    """Current and peak resident set size (bytes) from /proc/self/status."""
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(("VmRSS:", "VmHWM:")):
                key, val, unit = line.split()
                out[key[:-1]] = int(val) * 1024
    return out["VmRSS"], out["VmHWM"]


def reset_peak_rss():
    """Reset VmHWM to the current RSS (Linux >= 4.0); returns False if not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_rss_bytes():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # ru_maxrss is KiB on Linux


def percentile_us(ns, p):
    return float(np.percentile(np.asarray(ns, dtype=np.float64), p) / 1e3)


# ---------------------------------------------------------------------------------------------
# truth


def brute_force(hashes64, q64, distance):
    dist = np.bitwise_count(hashes64 ^ q64).sum(axis=1, dtype=np.int32)
    return np.flatnonzero(dist <= distance)


def cmd_truth(args):
    import faiss

    t0 = time.perf_counter()
    hashes = load_codes(os.path.join(args.dir, "hashes.bin"))
    queries = load_codes(os.path.join(args.dir, "queries.bin"))
    if args.limit_queries is not None:
        queries = queries[:args.limit_queries]
    radius = radius_for(args.distance)
    if args.threads:
        faiss.omp_set_num_threads(args.threads)
    index = faiss.IndexBinaryFlat(D_BITS)
    index.add(hashes)
    t1 = time.perf_counter()
    lines = []
    total = 0
    batch = 64
    for s in range(0, len(queries), batch):
        lims, dist, ids = index.range_search(queries[s:s + batch], radius)
        if dist.size and dist.max() > args.distance:
            raise RuntimeError("FAISS returned a distance above the requested maximum")
        for i in range(len(lims) - 1):
            row = np.sort(ids[lims[i]:lims[i + 1]])
            total += row.size
            lines.append(" ".join(map(str, row.tolist())))
    t2 = time.perf_counter()

    # Independent check of a few queries with numpy (popcount of XOR over 64-bit lanes).
    hashes64 = hashes.view(np.uint64)
    for i in range(min(args.check, len(queries))):
        want = " ".join(map(str, brute_force(hashes64, queries[i].view(np.uint64), args.distance).tolist()))
        if want != lines[i]:
            raise RuntimeError(f"truth mismatch on query {i}: faiss {lines[i]!r} numpy {want!r}")

    with open(os.path.join(args.dir, "truth.txt"), "w") as f:
        f.write("".join(line + "\n" for line in lines))
    with open(os.path.join(args.dir, "truth.json"), "w") as f:
        json.dump({"distance": args.distance, "queries": len(lines), "n": len(hashes), "pairs": total}, f)
        f.write("\n")
    nonempty = sum(1 for line in lines if line)
    log(f"truth: {len(lines)} queries, {nonempty} with matches, {total} pairs (<= {args.distance}, FAISS radius "
        f"{radius}); flat range_search {t2 - t1:.1f} s on {faiss.omp_get_max_threads()} threads, "
        f"{args.check} checked against numpy; total {time.perf_counter() - t0:.1f} s")


# ---------------------------------------------------------------------------------------------
# faiss


def parse_ints(spec, n):
    parts = [int(x) for x in spec.split(":")]
    if len(parts) != n:
        raise argparse.ArgumentTypeError(f"bad spec {spec!r}")
    return parts


def build_index(kind, nhash, b, nflip):
    import faiss

    if kind == "flat":
        return faiss.IndexBinaryFlat(D_BITS)
    if kind == "multihash":
        index = faiss.IndexBinaryMultiHash(D_BITS, nhash, b)
    elif kind == "hash":
        index = faiss.IndexBinaryHash(D_BITS, b)
    else:
        raise ValueError(kind)
    index.nflip = nflip
    return index


def cmd_one(args):
    """One index in a fresh process, so RSS deltas and peaks are not polluted by earlier indexes."""
    import faiss

    faiss.omp_set_num_threads(1)
    hashes = load_codes(os.path.join(args.dir, "hashes.bin"))
    queries = load_codes(os.path.join(args.dir, "queries.bin"))
    truth = load_truth(os.path.join(args.dir, "truth.txt"))
    queries = queries[:len(truth)]
    kinds_path = os.path.join(args.dir, "query_kinds.txt")
    kinds = np.array(open(kinds_path).read().split()) if os.path.exists(kinds_path) else None
    nq = len(queries) if args.lat_queries is None else min(args.lat_queries, len(queries))
    radius = args.radius

    index = build_index(args.kind, args.nhash, args.b, args.nflip)
    rss0, _ = rss_status()
    peak_reset = reset_peak_rss()
    t0 = time.perf_counter()
    index.add(hashes)
    build_s = time.perf_counter() - t0
    rss1, hwm = rss_status()
    out = {
        "kind": args.kind,
        "build_seconds": build_s,
        "rss_delta_bytes": rss1 - rss0,
        "bytes_per_hash": (rss1 - rss0) / len(hashes),
        "build_peak_bytes_per_hash": (hwm - rss0) / len(hashes) if peak_reset else None,
        "ru_maxrss_bytes": peak_rss_bytes(),
    }
    if args.kind == "multihash":
        out.update(nhash=args.nhash, b=args.b, nflip=args.nflip,
                   exact=args.nhash * args.b == D_BITS and args.nhash * (args.nflip + 1) > args.distance)
    elif args.kind == "hash":
        out.update(b=args.b, nflip=args.nflip, exact=args.nflip >= min(args.b, args.distance))
    else:
        out.update(exact=True)

    stats = faiss.cvar.indexBinaryHash_stats
    stats.reset()
    lat = np.empty(nq, dtype=np.int64)
    found = truth_pairs = extra = 0
    for i in range(nq):
        q = queries[i:i + 1]
        t = time.perf_counter_ns()
        lims, dist, ids = index.range_search(q, radius)
        lat[i] = time.perf_counter_ns() - t
        got = ids[dist <= args.distance]
        hit = np.intersect1d(got, truth[i], assume_unique=True).size
        found += hit
        extra += got.size - hit
        truth_pairs += truth[i].size
    out.update(
        queries_timed=nq,
        query_p50_us=percentile_us(lat, 50),
        query_p99_us=percentile_us(lat, 99),
        query_mean_us=float(lat.mean() / 1e3),
        truth_pairs=truth_pairs,
        recall=found / truth_pairs if truth_pairs else 1.0,
        false_positives=extra,
    )
    if kinds is not None:
        k = kinds[:nq]
        out["p50_us_by_kind"] = {kind: percentile_us(lat[k == kind], 50) for kind in sorted(set(k.tolist()))}
        out["p99_us_by_kind"] = {kind: percentile_us(lat[k == kind], 99) for kind in sorted(set(k.tolist()))}
    if args.kind != "flat":
        out["mean_candidates_per_query"] = stats.ndis / nq if nq else 0.0
        out["mean_nonempty_buckets_per_query"] = stats.nlist / nq if nq else 0.0
    print(json.dumps(out))


def call_overhead_us(radius):
    """p50 of a range_search call on a one-row index: the Python/SWIG cost included in every latency."""
    import faiss

    faiss.omp_set_num_threads(1)
    index = faiss.IndexBinaryFlat(D_BITS)
    q = np.zeros((1, CODE_BYTES), dtype=np.uint8)
    index.add(q)
    lat = []
    for _ in range(2000):
        t = time.perf_counter_ns()
        index.range_search(q, radius)
        lat.append(time.perf_counter_ns() - t)
    return percentile_us(lat[200:], 50)


def cmd_faiss(args):
    import faiss

    truth_meta = json.load(open(os.path.join(args.dir, "truth.json")))
    if truth_meta["distance"] != args.distance:
        sys.exit(f"truth.txt is for distance {truth_meta['distance']}, not {args.distance}; rerun truth")
    radius = radius_for(args.distance)
    common = [sys.executable, os.path.abspath(__file__), "_one", "--dir", args.dir,
              "--distance", str(args.distance), "--radius", str(radius)]

    def run(kind, nhash=0, b=0, nflip=0, lat_queries=None):
        cmd = common + ["--kind", kind, "--nhash", str(nhash), "--b", str(b), "--nflip", str(nflip)]
        if lat_queries is not None:
            cmd += ["--lat-queries", str(lat_queries)]
        t = time.perf_counter()
        res = json.loads(subprocess.check_output(cmd, text=True))
        label = kind + (f" nhash={nhash} b={b} nflip={nflip}" if kind == "multihash" else
                        f" b={b} nflip={nflip}" if kind == "hash" else "")
        log(f"faiss {label}: build {res['build_seconds']:.2f} s, p50 {res['query_p50_us']:.1f} us, "
            f"p99 {res['query_p99_us']:.1f} us, recall {res['recall']:.4f}, "
            f"{res['bytes_per_hash']:.1f} B/hash ({time.perf_counter() - t:.0f} s)")
        return res

    out = {
        "faiss_version": faiss.__version__,
        "n": int(os.path.getsize(os.path.join(args.dir, "hashes.bin")) // CODE_BYTES),
        "queries": truth_meta["queries"],
        "distance": args.distance,
        "range_radius_passed": radius,
        "threads": 1,
        "call_overhead_p50_us": call_overhead_us(radius),
        "flat": run("flat", lat_queries=args.flat_queries),
        "multihash": [run("multihash", *parse_ints(s, 3)) for s in args.multihash],
        "hash": [run("hash", 0, *parse_ints(s, 2)) for s in args.hash],
    }
    exact = [m for m in out["multihash"] if m["exact"]] or out["multihash"]
    if exact:
        out["multihash_best"] = min(exact, key=lambda m: m["query_p50_us"])
    print(json.dumps(out, indent=1))


# ---------------------------------------------------------------------------------------------
# report


def load_json_output(path):
    """The JSON object a program printed: the whole file, else its last line that parses as one."""
    text = open(path).read()
    try:
        return json.loads(text)
    except ValueError:
        for line in reversed(text.splitlines()):
            try:
                obj = json.loads(line)
            except ValueError:
                continue
            if isinstance(obj, dict):
                return obj
    sys.exit(f"{path}: no JSON object found")


def cmd_report(args):
    fa = json.load(open(args.faiss))
    fb = load_json_output(args.firebreak) if args.firebreak and os.path.exists(args.firebreak) else None
    rows = [("Firebreak (exact)", fb)] if fb else []
    if fb and fb.get("scan_p50_us"):
        rows.append(("Firebreak scan (first queries)", {"query_p50_us": fb["scan_p50_us"]}))
    rows.append(("FAISS BinaryFlat", fa["flat"]))
    for m in fa["multihash"]:
        tag = "exact" if m["exact"] else "approx"
        rows.append((f"FAISS MultiHash {m['nhash']}x{m['b']} f{m['nflip']} ({tag})", m))
    for h in fa["hash"]:
        rows.append((f"FAISS Hash b{h['b']} f{h['nflip']} (approx)", h))

    def f(x, spec):
        if x is not None:
            return format(x, spec)
        width = spec.split(".")[0]
        return "-".rjust(int(width)) if width.isdigit() else "-"

    print(f"\nExact Hamming range search, distance <= {fa['distance']}, N = {fa['n']}, "
          f"{fa['queries']} queries, one thread (FAISS {fa['faiss_version']}; FAISS latencies include "
          f"~{fa['call_overhead_p50_us']:.1f} us Python call overhead; flat timed on its first "
          f"{fa['flat']['queries_timed']} queries)")
    print(f"{'index':<40} {'build s':>9} {'p50 us':>10} {'p99 us':>10} {'recall':>8} {'B/hash':>8}")
    for name, r in rows:
        print(f"{name:<40} {f(r.get('build_seconds'), '9.2f')} {f(r.get('query_p50_us'), '10.1f')} "
              f"{f(r.get('query_p99_us'), '10.1f')} {f(r.get('recall'), '8.4f')} {f(r.get('bytes_per_hash'), '8.1f')}")
    if not fb:
        print("(no Firebreak result; ratios skipped)")
        return
    best = fa.get("multihash_best")

    def ratio(a, b):
        return f"{a / b:.2f}x" if a is not None and b else "-"

    print("\nRatios, FAISS / Firebreak (> 1 means Firebreak is faster / smaller):")
    print(f"  query p50, FAISS flat (first {fa['flat']['queries_timed']} queries): "
          f"{ratio(fa['flat']['query_p50_us'], fb.get('query_p50_us'))}"
          + (f"; vs Firebreak's own scan p50: {ratio(fa['flat']['query_p50_us'], fb['scan_p50_us'])}"
             if fb.get("scan_p50_us") else ""))
    if best:
        name = f"MultiHash {best['nhash']}x{best['b']} f{best['nflip']}"
        print(f"  query p50, FAISS {name}: {ratio(best['query_p50_us'], fb.get('query_p50_us'))}")
        print(f"  query p99, FAISS {name}: {ratio(best['query_p99_us'], fb.get('query_p99_us'))}")
        print(f"  build,     FAISS {name}: {ratio(best['build_seconds'], fb.get('build_seconds'))}"
              f"  (flat: {ratio(fa['flat']['build_seconds'], fb.get('build_seconds'))})")
        print(f"  memory,    FAISS {name}: {ratio(best['bytes_per_hash'], fb.get('bytes_per_hash'))}"
              f"  (flat: {ratio(fa['flat']['bytes_per_hash'], fb.get('bytes_per_hash'))})")
    print(f"  recall:    Firebreak {f(fb.get('recall'), '.4f')}, FAISS {name if best else 'MultiHash'} "
          f"{f(best['recall'] if best else None, '.4f')}, FAISS flat {fa['flat']['recall']:.4f}")
    print("  (FAISS B/hash = RSS growth while adding, including its own copy of the codes; Firebreak "
          "B/hash = the index's heap accounting"
          + (f", RSS growth {fb['rss_delta_bytes_per_hash']:.1f} B/hash excluding the already-resident input"
             if fb.get("rss_delta_bytes_per_hash") is not None else "") + ")")


# ---------------------------------------------------------------------------------------------


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)

    g = sub.add_parser("gen", help="generate a clustered corpus and queries")
    g.add_argument("--out", required=True)
    g.add_argument("--n", type=int, default=10_000_000)
    g.add_argument("--queries", type=int, default=1000)
    g.add_argument("--seed", type=int, default=7)
    g.set_defaults(fn=cmd_gen)

    t = sub.add_parser("truth", help="exact answers with FAISS IndexBinaryFlat")
    t.add_argument("--dir", required=True)
    t.add_argument("--distance", type=int, default=31)
    t.add_argument("--limit-queries", type=int)
    t.add_argument("--threads", type=int, default=0, help="OpenMP threads (default: all)")
    t.add_argument("--check", type=int, default=4, help="queries to re-check with numpy")
    t.set_defaults(fn=cmd_truth)

    f = sub.add_parser("faiss", help="time FAISS indexes, one thread, JSON to stdout")
    f.add_argument("--dir", required=True)
    f.add_argument("--distance", type=int, default=31)
    f.add_argument("--flat-queries", type=int, default=200)
    f.add_argument("--multihash", nargs="*", default=DEFAULT_MULTIHASH, metavar="NHASH:B:NFLIP")
    f.add_argument("--hash", nargs="*", default=DEFAULT_HASH, metavar="B:NFLIP")
    f.set_defaults(fn=cmd_faiss)

    o = sub.add_parser("_one", help=argparse.SUPPRESS)
    o.add_argument("--dir", required=True)
    o.add_argument("--distance", type=int, required=True)
    o.add_argument("--radius", type=int, required=True)
    o.add_argument("--kind", choices=["flat", "multihash", "hash"], required=True)
    o.add_argument("--nhash", type=int, default=0)
    o.add_argument("--b", type=int, default=0)
    o.add_argument("--nflip", type=int, default=0)
    o.add_argument("--lat-queries", type=int)
    o.set_defaults(fn=cmd_one)

    r = sub.add_parser("report", help="table of Firebreak vs FAISS")
    r.add_argument("--firebreak")
    r.add_argument("--faiss", required=True)
    r.set_defaults(fn=cmd_report)

    args = p.parse_args()
    args.fn(args)


if __name__ == "__main__":
    main()
