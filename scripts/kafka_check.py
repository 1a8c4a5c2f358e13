#!/usr/bin/env python3
"""Smoke-checks a Kafka-protocol broker with a real client (confluent-kafka / librdkafka).

Usage: python scripts/kafka_check.py BOOTSTRAP [--timeout SECONDS] [--extended] [--strict]

Required checks (any failure -> exit 1):
  metadata      the broker answers Metadata and advertises a reachable address
  create_topic  AdminClient.create_topics makes a 1-partition topic
  produce       idempotent producer (enable.idempotence=true, acks=all): 10 keyed messages
                with headers, every delivery report OK, offsets 0..9 in order
  consume       a consumer group reads the 10 back: keys, values, headers, order, offsets
  commit        a synchronous offset commit is stored and read back by committed()
  resume        a second consumer in the same group starts from the committed offset

--extended also probes what Firebreak does not rely on yet (reported, not fatal unless
--strict): auto topic creation on produce, transactions (commit and abort, read_committed),
a two-member consumer group rebalance, listing/describing groups, high watermark after a
multi-record batch, deleting a topic.

Every call is bounded by a timeout, so a broken broker fails the check rather than hanging.
Prints one line per check and ends with "kafka_check: N passed, N failed".
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback
import uuid

try:
    from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
    from confluent_kafka.admin import AdminClient, NewTopic
except ImportError:  # pragma: no cover - environment problem, not a broker problem
    sys.exit(
        "kafka_check: confluent-kafka is not installed; e.g.\n"
        "  python3 -m venv /var/cache/firebreak/kafkavenv &&"
        " /var/cache/firebreak/kafkavenv/bin/pip install confluent-kafka"
    )

N = 10


class CheckFailed(Exception):
    pass


def expect(cond: bool, msg: str) -> None:
    if not cond:
        raise CheckFailed(msg)


class Ctx:
    def __init__(self, bootstrap: str, timeout: float, verbose: bool):
        self.bootstrap = bootstrap
        self.timeout = timeout
        self.verbose = verbose
        self.run_id = uuid.uuid4().hex[:8]
        self.topic = f"firebreak-check-{self.run_id}"
        self.group = f"firebreak-check-group-{self.run_id}"
        self.admin = AdminClient(self.base())
        self.cleanup_topics: list[str] = []  # create_topic() adds to it

    def base(self, **extra) -> dict:
        conf = {
            "bootstrap.servers": self.bootstrap,
            "socket.timeout.ms": int(self.timeout * 1000),
            # Keep librdkafka's own chatter off stderr unless asked for.
            "log_level": 7 if self.verbose else 3,
        }
        if self.verbose:
            conf["debug"] = "broker,protocol,cgrp,eos,topic"
        conf.update(extra)
        return conf

    def expected(self, i: int) -> tuple[bytes, bytes, list[tuple[str, bytes]]]:
        key = f"key-{i}".encode()
        value = f"value-{i}-{self.run_id}".encode()
        headers = [("seq", str(i).encode()), ("run", self.run_id.encode()), ("dup", b"a"), ("dup", b"b")]
        return key, value, headers

    def create_topic(self, name: str, partitions: int) -> None:
        futs = self.admin.create_topics(
            [NewTopic(name, num_partitions=partitions, replication_factor=1)],
            operation_timeout=self.timeout,
            request_timeout=self.timeout,
        )
        futs[name].result(timeout=self.timeout)
        self.wait_for_topic(name, partitions)
        self.cleanup_topics.append(name)

    def wait_for_topic(self, name: str, partitions: int | None = None) -> None:
        deadline = time.monotonic() + self.timeout
        while True:
            md = self.admin.list_topics(topic=name, timeout=self.timeout)
            t = md.topics.get(name)
            if t is not None and t.error is None and t.partitions:
                if partitions is None or len(t.partitions) == partitions:
                    return
            if time.monotonic() > deadline:
                raise CheckFailed(f"topic {name} not visible in metadata: {t and t.error}")
            time.sleep(0.1)

    def produce(self, topic: str, msgs, conf: dict, partition: int | None = None) -> list:
        reports: list = []
        p = Producer(self.base(**conf))
        for key, value, headers in msgs:
            kw = {} if partition is None else {"partition": partition}
            p.produce(
                topic, key=key, value=value, headers=headers,
                on_delivery=lambda err, m: reports.append((err, m)), **kw,
            )
            p.poll(0)
        left = p.flush(self.timeout)
        expect(left == 0, f"{left} message(s) still undelivered after {self.timeout}s")
        errs = [str(e) for e, _ in reports if e is not None]
        expect(not errs, f"delivery errors: {errs[:3]}")
        expect(len(reports) == len(msgs), f"{len(reports)} delivery reports for {len(msgs)} messages")
        return [m for _, m in reports]

    def consumer(self, group: str, **extra) -> Consumer:
        return Consumer(self.base(**{
            "group.id": group,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            # tansu holds a JoinGroup for about half the session timeout before it answers,
            # so a short one keeps the check quick (librdkafka's default 45 s costs ~23 s).
            "session.timeout.ms": 6000,
            "heartbeat.interval.ms": 1000,
            **extra,
        }))

    def poll_n(self, c: Consumer, n: int, settle: float = 0.0) -> list:
        """Polls until n messages (then `settle` more seconds to catch extras) or timeout."""
        got = []
        deadline = time.monotonic() + self.timeout
        extra_until = None
        while time.monotonic() < deadline:
            if extra_until is not None and time.monotonic() > extra_until:
                break
            m = c.poll(0.2)
            if m is None:
                continue
            if m.error():
                if m.error().code() == KafkaError._PARTITION_EOF:
                    continue
                raise CheckFailed(f"consumer error: {m.error()}")
            got.append(m)
            if len(got) >= n and extra_until is None:
                if settle <= 0:
                    break
                extra_until = time.monotonic() + settle
        return got


def check_metadata(ctx: Ctx) -> str:
    md = ctx.admin.list_topics(timeout=ctx.timeout)
    expect(bool(md.brokers), "no brokers in metadata")
    brokers = ", ".join(f"{b.id}@{b.host}:{b.port}" for b in md.brokers.values())
    return f"cluster={md.cluster_id} controller={md.controller_id} brokers=[{brokers}]"


def check_create_topic(ctx: Ctx) -> str:
    ctx.create_topic(ctx.topic, 1)
    return f"{ctx.topic} (1 partition)"


def check_produce(ctx: Ctx) -> str:
    msgs = [ctx.expected(i) for i in range(N)]
    t0 = time.monotonic()
    reports = ctx.produce(ctx.topic, msgs, {"enable.idempotence": True, "acks": "all"})
    offsets = [m.offset() for m in reports]
    expect(offsets == list(range(N)), f"offsets {offsets}, expected 0..{N - 1}")
    expect({m.partition() for m in reports} == {0}, "messages went to more than one partition")
    return f"{N} messages, idempotent, acks=all, offsets 0..{N - 1} in {time.monotonic() - t0:.2f}s"


def verify(ctx: Ctx, got: list, first: int, count: int) -> None:
    expect(len(got) == count, f"got {len(got)} messages, expected {count}")
    for j, m in enumerate(got):
        i = first + j
        key, value, headers = ctx.expected(i)
        expect(m.offset() == i, f"message {j}: offset {m.offset()}, expected {i}")
        expect(m.key() == key, f"offset {i}: key {m.key()!r}, expected {key!r}")
        expect(m.value() == value, f"offset {i}: value {m.value()!r}, expected {value!r}")
        expect(m.headers() == headers, f"offset {i}: headers {m.headers()!r}, expected {headers!r}")
        ts_type, ts = m.timestamp()
        expect(ts_type != 0 and ts > 0, f"offset {i}: no timestamp ({ts_type}, {ts})")


def check_consume(ctx: Ctx) -> str:
    c = ctx.consumer(ctx.group)
    try:
        t0 = time.monotonic()
        c.subscribe([ctx.topic])
        got = ctx.poll_n(c, N, settle=0.5)
        verify(ctx, got, 0, N)
        took = time.monotonic() - t0
        c.commit(asynchronous=False)
        committed = c.committed([TopicPartition(ctx.topic, 0)], timeout=ctx.timeout)
        ctx.committed_offset = committed[0].offset
    finally:
        c.close()
    return f"group {ctx.group}: {N} messages, keys/values/headers/order ok, join+fetch in {took:.2f}s"


def check_commit(ctx: Ctx) -> str:
    off = getattr(ctx, "committed_offset", None)
    expect(off == N, f"committed offset {off}, expected {N}")
    # And from a fresh client that never consumed (OffsetFetch without a join).
    c = ctx.consumer(ctx.group)
    try:
        tp = c.committed([TopicPartition(ctx.topic, 0)], timeout=ctx.timeout)[0]
    finally:
        c.close()
    expect(tp.offset == N, f"fresh client sees committed offset {tp.offset}, expected {N}")
    return f"committed offset {N}"


def check_resume(ctx: Ctx) -> str:
    ctx.produce(ctx.topic, [ctx.expected(N)], {"enable.idempotence": True, "acks": "all"})
    c = ctx.consumer(ctx.group)
    try:
        c.subscribe([ctx.topic])
        got = ctx.poll_n(c, 1, settle=1.0)
        verify(ctx, got, N, 1)
    finally:
        c.close()
    return f"second member resumed at offset {N}"


# ---- extended probes -------------------------------------------------------------------


def probe_auto_create(ctx: Ctx) -> str:
    topic = f"firebreak-auto-{ctx.run_id}"
    ctx.cleanup_topics.append(topic)
    reports = ctx.produce(topic, [ctx.expected(0)], {"acks": "all", "allow.auto.create.topics": True})
    md = ctx.admin.list_topics(topic=topic, timeout=ctx.timeout).topics[topic]
    return f"produce to a missing topic created it ({len(md.partitions)} partition(s), offset {reports[0].offset()})"


def probe_transactions(ctx: Ctx) -> str:
    topic = f"firebreak-txn-{ctx.run_id}"
    ctx.create_topic(topic, 1)
    p = Producer(ctx.base(**{
        "transactional.id": f"firebreak-txn-{ctx.run_id}",
        "transaction.timeout.ms": 60000,
    }))
    p.init_transactions(ctx.timeout)
    p.begin_transaction()
    p.produce(topic, key=b"aborted", value=b"aborted")
    p.flush(ctx.timeout)
    p.abort_transaction(ctx.timeout)
    p.begin_transaction()
    for i in range(3):
        p.produce(topic, key=f"committed-{i}".encode(), value=b"x")
    p.commit_transaction(ctx.timeout)
    c = ctx.consumer(f"{ctx.group}-txn", **{"isolation.level": "read_committed"})
    try:
        c.subscribe([topic])
        got = ctx.poll_n(c, 3, settle=1.0)
    finally:
        c.close()
    keys = [m.key() for m in got]
    expect(keys == [b"committed-0", b"committed-1", b"committed-2"],
           f"read_committed saw {keys} (aborted record or missing committed records)")
    return "init/begin/abort/commit ok; read_committed sees only the committed records"


def probe_rebalance(ctx: Ctx) -> str:
    topic = f"firebreak-multi-{ctx.run_id}"
    ctx.create_topic(topic, 4)
    msgs = [(f"k{i}".encode(), f"v{i}".encode(), None) for i in range(20)]
    p = Producer(ctx.base(**{"enable.idempotence": True, "acks": "all"}))
    for i, (k, v, _) in enumerate(msgs):
        p.produce(topic, key=k, value=v, partition=i % 4)
    expect(p.flush(ctx.timeout) == 0, "undelivered messages")
    group = f"{ctx.group}-multi"
    assigned: dict[str, list[int]] = {"a": [], "b": []}
    cs = {}
    for name in ("a", "b"):
        def on_assign(c, parts, name=name):
            assigned[name] = sorted(tp.partition for tp in parts)
        c = ctx.consumer(group, **{"partition.assignment.strategy": "range"})
        c.subscribe([topic], on_assign=on_assign)
        cs[name] = c
    got: list = []
    deadline = time.monotonic() + ctx.timeout * 2
    try:
        while time.monotonic() < deadline and (
            len(got) < 20 or not (assigned["a"] and assigned["b"])
        ):
            for c in cs.values():
                m = c.poll(0.1)
                if m is not None and not m.error():
                    got.append(m)
    finally:
        for c in cs.values():
            c.close()
    expect(len({(m.partition(), m.offset()) for m in got}) == 20, f"got {len(got)} of 20 messages")
    expect(bool(assigned["a"]) and bool(assigned["b"]),
           f"partitions were not split between the two members: {assigned}")
    return f"4 partitions split between 2 members: {assigned}"


def probe_groups(ctx: Ctx) -> str:
    groups = ctx.admin.list_consumer_groups(request_timeout=ctx.timeout).result(timeout=ctx.timeout)
    ids = sorted(g.group_id for g in groups.valid)
    expect(ctx.group in ids, f"{ctx.group} not in listed groups {ids}")
    desc = ctx.admin.describe_consumer_groups([ctx.group], request_timeout=ctx.timeout)
    d = desc[ctx.group].result(timeout=ctx.timeout)
    return f"listed {len(ids)} group(s); {ctx.group} state={d.state}"


def probe_watermarks(ctx: Ctx) -> str:
    """The high watermark must be one past the last record (after a multi-record batch too)."""
    topic = f"firebreak-wm-{ctx.run_id}"
    ctx.create_topic(topic, 1)
    msgs = [(f"k{i}".encode(), b"v", None) for i in range(5)]
    # One produce call per message, but linger lets librdkafka send them as one batch.
    ctx.produce(topic, msgs, {"enable.idempotence": True, "acks": "all", "linger.ms": 100})
    c = ctx.consumer(f"{ctx.group}-wm")
    try:
        lo, hi = c.get_watermark_offsets(TopicPartition(topic, 0), timeout=ctx.timeout)
    finally:
        c.close()
    expect((lo, hi) == (0, 5), f"watermarks ({lo}, {hi}) after 5 records in one batch, expected (0, 5)")
    return "(0, 5) after one 5-record batch"


def probe_delete_topic(ctx: Ctx) -> str:
    topic = f"firebreak-del-{ctx.run_id}"
    ctx.create_topic(topic, 1)
    ctx.admin.delete_topics([topic], operation_timeout=ctx.timeout)[topic].result(timeout=ctx.timeout)
    deadline = time.monotonic() + ctx.timeout
    while topic in ctx.admin.list_topics(timeout=ctx.timeout).topics:
        expect(time.monotonic() < deadline, "topic still listed after delete")
        time.sleep(0.1)
    return "deleted"


REQUIRED = [
    ("metadata", check_metadata),
    ("create_topic", check_create_topic),
    ("produce", check_produce),
    ("consume", check_consume),
    ("commit", check_commit),
    ("resume", check_resume),
]
EXTENDED = [
    ("auto_create", probe_auto_create),
    ("transactions", probe_transactions),
    ("rebalance", probe_rebalance),
    ("groups", probe_groups),
    ("watermarks", probe_watermarks),
    ("delete_topic", probe_delete_topic),
]


def run(ctx: Ctx, name: str, fn, required: bool) -> bool:
    t0 = time.monotonic()
    try:
        detail = fn(ctx)
        print(f"PASS {name:<13} {detail} [{time.monotonic() - t0:.2f}s]", flush=True)
        return True
    except Exception as e:  # noqa: BLE001 - every failure is reported, not raised
        tag = "FAIL" if required else "NO  "
        msg = str(e) if isinstance(e, (CheckFailed, KafkaException)) else repr(e)
        print(f"{tag} {name:<13} {msg} [{time.monotonic() - t0:.2f}s]", flush=True)
        if ctx.verbose:
            traceback.print_exc()
        return False


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("bootstrap", help="host:port of the broker, e.g. 127.0.0.1:9092")
    ap.add_argument("--timeout", type=float, default=15.0, help="per-operation timeout in seconds")
    ap.add_argument("--extended", action="store_true", help="also probe optional broker features")
    ap.add_argument("--strict", action="store_true", help="with --extended: unsupported features fail")
    ap.add_argument("-v", "--verbose", action="store_true", help="librdkafka debug logs and tracebacks")
    args = ap.parse_args()

    ctx = Ctx(args.bootstrap, args.timeout, args.verbose)
    passed = failed = 0
    for i, (name, fn) in enumerate(REQUIRED):
        if failed and name != "metadata":
            # Later checks build on the earlier ones; don't pile up confusing failures.
            print(f"SKIP {name:<13} an earlier check failed", flush=True)
            continue
        if run(ctx, name, fn, True):
            passed += 1
        else:
            failed += 1
    if args.extended and not failed:
        for name, fn in EXTENDED:
            ok = run(ctx, name, fn, args.strict)
            if ok:
                passed += 1
            elif args.strict:
                failed += 1
    try:
        existing = ctx.admin.list_topics(timeout=ctx.timeout).topics if ctx.cleanup_topics else {}
        topics = sorted({t for t in ctx.cleanup_topics if t in existing})
        if topics:
            for f in ctx.admin.delete_topics(topics, operation_timeout=ctx.timeout).values():
                f.result(timeout=ctx.timeout)
    except Exception as e:  # noqa: BLE001 - cleanup is best effort
        print(f"note: could not delete check topics: {e}", flush=True)
    print(f"kafka_check: {passed} passed, {failed} failed", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
