#!/usr/bin/env python3
"""Reads a Kafka topic from offset 0 of every partition with an ordinary
Kafka client (kafka-python), as the data platform would, and prints one JSON
line per record: partition, offset, key, value, headers, and the partition
Kafka's default partitioner (murmur2 of the key) assigns that key.

    read_topic.py BROKERS TOPIC MIN_RECORDS TIMEOUT_SECONDS

It reads until at least MIN_RECORDS records arrived or the timeout passed,
and exits 0 either way (the caller checks what it printed); 2 when
kafka-python is missing.
"""
import json
import sys
import time

try:
    from kafka import KafkaConsumer, TopicPartition
    from kafka.partitioner.default import murmur2
except ImportError:
    print("kafka-python is missing: pip install kafka-python", file=sys.stderr)
    sys.exit(2)


def read_once(brokers, topic, wanted, deadline):
    """One fresh consumer, from offset 0 of every partition: the records it
    gets before `wanted` arrived or it went quiet for a second."""
    # No group: the offsets are ours, from 0 (a fresh client, nothing committed).
    consumer = KafkaConsumer(
        bootstrap_servers=brokers,
        enable_auto_commit=False,
        group_id=None,
        auto_offset_reset="earliest",
    )
    try:
        partitions = consumer.partitions_for_topic(topic)
        if not partitions:
            return []
        assigned = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(assigned)
        for tp in assigned:
            consumer.seek(tp, 0)
        out = []
        quiet_since = time.monotonic()
        while len(out) < wanted and time.monotonic() < deadline:
            batches = consumer.poll(timeout_ms=200)
            if not batches:
                if time.monotonic() - quiet_since > 1.0:
                    break
                continue
            quiet_since = time.monotonic()
            for tp, records in sorted(batches.items(), key=lambda kv: kv[0].partition):
                for r in records:
                    key = r.key.decode() if r.key is not None else None
                    expected = None
                    if r.key is not None:
                        expected = (murmur2(r.key) & 0x7FFFFFFF) % len(partitions)
                    out.append({
                        "partition": tp.partition,
                        "offset": r.offset,
                        "key": key,
                        "value": r.value.decode(),
                        "headers": {k: v.decode() for k, v in (r.headers or [])},
                        "partitionerChoice": expected,
                    })
        return out
    finally:
        consumer.close()


def main():
    brokers, topic, wanted, timeout = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
    deadline = time.monotonic() + timeout
    # A fresh client per attempt: tansu's memory storage answers a client
    # that fetched a partition while it was empty with wrong offsets
    # afterwards, so each attempt starts over from offset 0.
    records = []
    while time.monotonic() < deadline:
        records = read_once(brokers, topic, wanted, deadline)
        if len(records) >= wanted:
            break
        time.sleep(0.2)
    for record in records:
        print(json.dumps(record), flush=True)


if __name__ == "__main__":
    main()
