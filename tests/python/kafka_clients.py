"""Real Kafka clients against Strata's Kafka listener: confluent-kafka (librdkafka) and
kafka-python, driven by tests/tests/kafka.rs.

  kafka_clients.py roundtrip CLIENT BOOTSTRAP TOPIC PARTITIONS RECORDS OUT
      Creates TOPIC through the client's admin API, produces RECORDS keyed records with
      headers (split evenly over every codec the client has: none, gzip, snappy, lz4,
      zstd), reads the topic back by partition assignment from the beginning, checks
      that every acknowledged record is there exactly once with its value and headers,
      each partition in offset order, each key in its murmur2 partition, and writes
      what it read to OUT (one JSON object per line: partition, offset, key, value,
      headers) for the test to compare with `strata consume --json`.

  kafka_clients.py describe BOOTSTRAP TOPIC
      Creates TOPIC with two configs set, writes 5 records to partition 0 and deletes 2;
      prints its configs (value, source), partition count, and partition 0's earliest and
      latest offsets as the AdminClient sees them, to check against `strata topic
      describe`.

  kafka_clients.py admin BOOTSTRAP TOPIC
      confluent-kafka's AdminClient: create, describe and alter configs, create
      partitions, list offsets, delete records, describe cluster, delete; prints one JSON
      object of what it saw.

  kafka_clients.py group CLIENT BOOTSTRAP TOPIC GROUP OUT [PROTOCOL]
      A member of consumer group GROUP subscribed to TOPIC (confluent-kafka with
      group.protocol PROTOCOL, classic or consumer; kafka-python: classic), committing
      synchronously after each batch. Writes to OUT, flushed as it goes, the lines
      tests/tests/kafka_groups.rs reads: "R partition offset key" per record, "A ms p,..."
      / "V ms p,..." / "L ms p,..." when its callbacks report partitions assigned,
      revoked or lost, "C ms" when it closed. Runs until SIGTERM (then commits, leaves
      and exits) or SIGKILL.

  kafka_clients.py read-committed BOOTSTRAP TOPIC OUT
      confluent-kafka with isolation.level=read_committed reads every partition of TOPIC
      from the beginning until nothing new comes for 3 s; writes each key to OUT.

Exits non-zero, saying why, on any failure.
"""

import json
import sys
import time

from kafka.partitioner.default import murmur2

CODECS = ["none", "gzip", "snappy", "lz4", "zstd"]


def partition_of(key: bytes, partitions: int) -> int:
    """Kafka's default partitioner: murmur2(key), positive, modulo the partition count."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions


def record(i: int, codec: str):
    key = f"key-{i}".encode()
    value = f"value-{i}-{codec}-".encode() * (1 + i % 7)
    headers = [("n", str(i).encode()), ("codec", codec.encode()), ("n", b"again")]
    return key, value, headers


def fail(message: str):
    print(f"FAIL: {message}", file=sys.stderr)
    sys.exit(1)


def check(read, sent, partitions: int):
    """Every sent record read exactly once, in its murmur2 partition, with its value and
    headers; offsets increase within each partition."""
    by_key = {}
    last_offset = {}
    for r in read:
        key = r["key"].encode()
        if key in by_key:
            fail(f"{r['key']} read twice")
        by_key[key] = r
        if r["offset"] <= last_offset.get(r["partition"], -1):
            fail(f"partition {r['partition']} out of order at offset {r['offset']}")
        last_offset[r["partition"]] = r["offset"]
    missing = [k for k in sent if k not in by_key]
    if missing:
        fail(f"{len(missing)} acknowledged records missing, e.g. {missing[:3]}")
    if len(read) != len(sent):
        fail(f"read {len(read)} records, sent {len(sent)}")
    for key, (value, headers, partition, offset) in sent.items():
        r = by_key[key]
        if r["value"].encode() != value:
            fail(f"{key!r}: value differs")
        if [(k, v.encode()) for k, v in r["headers"]] != headers:
            fail(f"{key!r}: headers {r['headers']} differ from {headers}")
        if r["partition"] != partition_of(key, partitions):
            fail(f"{key!r} in partition {r['partition']}, murmur2 says {partition_of(key, partitions)}")
        if (r["partition"], r["offset"]) != (partition, offset):
            fail(f"{key!r} acknowledged at {partition}/{offset}, read at {r['partition']}/{r['offset']}")


def as_row(partition, offset, key, value, headers):
    return {
        "partition": partition,
        "offset": offset,
        "key": key.decode(),
        "value": value.decode(),
        "headers": [[k, (v or b"").decode()] for k, v in (headers or [])],
    }


def confluent_roundtrip(bootstrap, topic, partitions, count):
    from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})
    for f in admin.create_topics([NewTopic(topic, num_partitions=partitions)]).values():
        f.result(30)
    acked = {}
    sent = {}
    errors = []

    def delivered(err, msg):
        if err is not None:
            errors.append(str(err))
        else:
            acked[msg.key()] = (msg.partition(), msg.offset())

    per_codec = count // len(CODECS)
    for n, codec in enumerate(CODECS):
        producer = Producer({
            "bootstrap.servers": bootstrap,
            "compression.type": codec,
            "partitioner": "murmur2_random",
            "enable.idempotence": True,
            "linger.ms": 20,
        })
        for i in range(n * per_codec, (n + 1) * per_codec):
            key, value, headers = record(i, codec)
            sent[key] = (value, headers)
            while True:
                try:
                    producer.produce(topic, key=key, value=value, headers=headers, on_delivery=delivered)
                    break
                except BufferError:
                    producer.poll(0.1)
            producer.poll(0)
        if producer.flush(120) != 0:
            fail(f"{codec}: records still unacknowledged after 120 s")
    if errors:
        fail(f"{len(errors)} deliveries failed, e.g. {errors[:3]}")
    sent = {k: (v, h) + acked[k] for k, (v, h) in sent.items() if k in acked}

    consumer = Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": "strata-test-unused",
        "enable.auto.commit": False,
        "enable.partition.eof": True,
    })
    consumer.assign([TopicPartition(topic, p, -2) for p in range(partitions)])
    read, done, deadline = [], set(), time.time() + 120
    while len(done) < partitions and time.time() < deadline:
        msg = consumer.poll(1.0)
        if msg is None:
            continue
        if msg.error():
            if msg.error().code() == -191:  # _PARTITION_EOF
                done.add(msg.partition())
                continue
            raise KafkaException(msg.error())
        read.append(as_row(msg.partition(), msg.offset(), msg.key(), msg.value(), msg.headers()))
    consumer.close()
    return sent, read


def kafka_python_roundtrip(bootstrap, topic, partitions, count):
    from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
    from kafka.admin import NewTopic

    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    admin.create_topics([NewTopic(topic, partitions, 1)])
    admin.close()
    sent = {}
    per_codec = count // len(CODECS)
    for n, codec in enumerate(CODECS):
        producer = KafkaProducer(
            bootstrap_servers=bootstrap,
            compression_type=None if codec == "none" else codec,
            linger_ms=20,
            acks="all",
        )
        futures = []
        for i in range(n * per_codec, (n + 1) * per_codec):
            key, value, headers = record(i, codec)
            futures.append((key, value, headers, producer.send(topic, key=key, value=value, headers=headers)))
        producer.flush(120)
        for key, value, headers, future in futures:
            meta = future.get(timeout=120)
            sent[key] = (value, headers, meta.partition, meta.offset)
        producer.close()

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
    tps = [TopicPartition(topic, p) for p in range(partitions)]
    consumer.assign(tps)
    consumer.seek_to_beginning()
    ends = consumer.end_offsets(tps)
    read, deadline = [], time.time() + 120
    while any(consumer.position(tp) < ends[tp] for tp in tps) and time.time() < deadline:
        for tp, messages in consumer.poll(timeout_ms=1000).items():
            for m in messages:
                read.append(as_row(m.partition, m.offset, m.key, m.value, m.headers))
    consumer.close()
    return sent, read


def roundtrip(client, bootstrap, topic, partitions, count, out):
    partitions, count = int(partitions), int(count)
    run = {"confluent": confluent_roundtrip, "kafka-python": kafka_python_roundtrip}[client]
    started = time.time()
    sent, read = run(bootstrap, topic, partitions, count)
    check(read, sent, partitions)
    with open(out, "w") as f:
        for r in read:
            f.write(json.dumps(r) + "\n")
    print(json.dumps({
        "client": client,
        "acknowledged": len(sent),
        "read": len(read),
        "codecs": CODECS,
        "seconds": round(time.time() - started, 1),
    }))


def admin(bootstrap, topic):
    from confluent_kafka import TopicPartition
    from confluent_kafka.admin import (AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource,
                                       NewPartitions, NewTopic, OffsetSpec, ResourceType)

    a = AdminClient({"bootstrap.servers": bootstrap})
    seen = {}
    for f in a.create_topics([NewTopic(topic, num_partitions=2, config={"retention.ms": "3600000"})]).values():
        f.result(30)
    resource = ConfigResource(ResourceType.TOPIC, topic)
    configs = a.describe_configs([resource])[resource].result(30)
    seen["configs"] = {k: [c.value, c.source] for k, c in configs.items()}
    a.incremental_alter_configs([ConfigResource(ResourceType.TOPIC, topic, incremental_configs=[
        ConfigEntry("max.message.bytes", "2000000", incremental_operation=AlterConfigOpType.SET),
        ConfigEntry("retention.ms", None, incremental_operation=AlterConfigOpType.DELETE),
    ])])[ConfigResource(ResourceType.TOPIC, topic)].result(30)
    configs = a.describe_configs([resource])[resource].result(30)
    seen["altered"] = {k: [c.value, c.source] for k, c in configs.items()}
    for f in a.create_partitions([NewPartitions(topic, 4)]).values():
        f.result(30)
    # Records to list and delete: 10 in partition 0, timestamps 1 s apart.
    from confluent_kafka import Producer
    p = Producer({"bootstrap.servers": bootstrap})
    base = int(time.time() * 1000) - 60_000
    for i in range(10):
        p.produce(topic, value=f"v{i}".encode(), partition=0, timestamp=base + i * 1000)
    if p.flush(60) != 0:
        fail("records unacknowledged")
    tp = TopicPartition(topic, 0)
    offsets = {}
    for name, spec in [("earliest", OffsetSpec.earliest()), ("latest", OffsetSpec.latest()),
                       ("timestamp", OffsetSpec.for_timestamp(base + 4500)), ("max_timestamp", OffsetSpec.max_timestamp())]:
        offsets[name] = a.list_offsets({tp: spec})[tp].result(30).offset
    seen["offsets"] = offsets
    deleted = a.delete_records([TopicPartition(topic, 0, 3)])
    seen["low_watermark"] = list(deleted.values())[0].result(30).low_watermark
    seen["earliest_after_delete"] = a.list_offsets({tp: OffsetSpec.earliest()})[tp].result(30).offset
    cluster = a.describe_cluster().result(30)
    seen["cluster"] = {"cluster_id": cluster.cluster_id, "nodes": sorted(n.id for n in cluster.nodes),
                       "controller": cluster.controller.id if cluster.controller else None}
    meta = a.list_topics(topic, timeout=30)
    seen["partitions"] = len(meta.topics[topic].partitions)
    for f in a.delete_topics([topic]).values():
        f.result(30)
    print(json.dumps(seen))


def describe(bootstrap, topic):
    """A topic created with two configs set, 5 records in partition 0 of which 2 are
    deleted: its configs (value, source), partition count, and partition 0's earliest and
    latest offsets, as the AdminClient sees them."""
    from confluent_kafka import Producer, TopicPartition
    from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic, OffsetSpec, ResourceType

    a = AdminClient({"bootstrap.servers": bootstrap})
    config = {"retention.ms": "7200000", "max.message.bytes": "500000"}
    for f in a.create_topics([NewTopic(topic, num_partitions=3, config=config)]).values():
        f.result(30)
    p = Producer({"bootstrap.servers": bootstrap})
    for i in range(5):
        p.produce(topic, value=f"v{i}".encode(), partition=0)
    if p.flush(60) != 0:
        fail("records unacknowledged")
    for f in a.delete_records([TopicPartition(topic, 0, 2)]).values():
        f.result(30)
    resource = ConfigResource(ResourceType.TOPIC, topic)
    configs = a.describe_configs([resource])[resource].result(30)
    tp = TopicPartition(topic, 0)
    print(json.dumps({
        "configs": {k: [c.value, c.source] for k, c in configs.items()},
        "partitions": len(a.list_topics(topic, timeout=30).topics[topic].partitions),
        "earliest": a.list_offsets({tp: OffsetSpec.earliest()})[tp].result(30).offset,
        "latest": a.list_offsets({tp: OffsetSpec.latest()})[tp].result(30).offset,
    }))

def group(client, bootstrap, topic, group_id, out, protocol="classic"):
    import signal

    log = open(out, "w", buffering=1)
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))

    def note(kind, partitions):
        if partitions:
            log.write(f"{kind} {int(time.time() * 1000)} {','.join(str(p) for p in sorted(partitions))}\n")

    if client == "confluent":
        from confluent_kafka import Consumer

        config = {
            "bootstrap.servers": bootstrap,
            "group.id": group_id,
            "group.protocol": protocol,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
        }
        if protocol == "classic":
            config["session.timeout.ms"] = 10000
            config["heartbeat.interval.ms"] = 1000
            config["partition.assignment.strategy"] = "cooperative-sticky"
        c = Consumer(config)
        c.subscribe(
            [topic],
            on_assign=lambda _, ps: note("A", [p.partition for p in ps]),
            on_revoke=lambda _, ps: note("V", [p.partition for p in ps]),
            on_lost=lambda _, ps: note("L", [p.partition for p in ps]),
        )
        while not stopping:
            msgs = c.consume(1000, timeout=0.5)
            good = [m for m in msgs if m.error() is None]
            for m in good:
                key = m.key().decode() if m.key() is not None else "-"
                log.write(f"R {m.partition()} {m.offset()} {key}\n")
            if good:
                try:
                    c.commit(asynchronous=False)
                except Exception as e:  # a commit refused during a rebalance: at least once
                    print(f"commit: {e}", file=sys.stderr)
        c.close()
    elif client == "kafka-python":
        from kafka import KafkaConsumer
        from kafka.consumer.subscription_state import ConsumerRebalanceListener

        class Listener(ConsumerRebalanceListener):
            def on_partitions_revoked(self, revoked):
                note("V", [tp.partition for tp in revoked])

            def on_partitions_assigned(self, assigned):
                note("A", [tp.partition for tp in assigned])

        c = KafkaConsumer(
            bootstrap_servers=bootstrap,
            group_id=group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=10000,
            heartbeat_interval_ms=1000,
        )
        c.subscribe([topic], listener=Listener())
        while not stopping:
            batches = c.poll(timeout_ms=500)
            for tp, records in batches.items():
                for r in records:
                    key = r.key.decode() if r.key is not None else "-"
                    log.write(f"R {tp.partition} {r.offset} {key}\n")
            if batches:
                try:
                    c.commit()
                except Exception as e:
                    print(f"commit: {e}", file=sys.stderr)
        c.close()
    else:
        fail(f"no group client {client}")
    log.write(f"C {int(time.time() * 1000)}\n")
    log.close()


def read_committed(bootstrap, topic, out):
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": "unused",
        "isolation.level": "read_committed",
        "enable.auto.commit": False,
    })
    partitions = c.list_topics(topic, timeout=30).topics[topic].partitions
    c.assign([TopicPartition(topic, p, -2) for p in partitions])
    idle_since = time.time()
    deadline = time.time() + 120
    with open(out, "w") as f:
        while time.time() < deadline:
            msgs = [m for m in c.consume(1000, timeout=0.5) if m.error() is None]
            for m in msgs:
                f.write(m.key().decode() + "\n")
            if msgs:
                idle_since = time.time()
            elif time.time() - idle_since > 3:
                break
    c.close()



def acl_probe(bootstrap, user, token, action, *args):
    """One operation as `user` (SASL/PLAIN with `token`); prints {"result": "ok" or Kafka's
    error name, ...}. Actions: metadata, produce TOPIC, consume TOPIC, create TOPIC,
    delete TOPIC, commit TOPIC GROUP, acl-add PRINCIPAL TOPIC OPERATION, acl-list,
    acl-remove PRINCIPAL TOPIC."""
    from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
    from confluent_kafka.admin import (AclBinding, AclBindingFilter, AclOperation,
                                       AclPermissionType, AdminClient, NewTopic,
                                       ResourcePatternType, ResourceType)

    auth = {
        "bootstrap.servers": bootstrap,
        "security.protocol": "SASL_PLAINTEXT",
        "sasl.mechanism": "PLAIN",
        "sasl.username": user,
        "sasl.password": token,
    }
    out = {"result": "ok"}

    def name_of(error):
        return error.name() if hasattr(error, "name") else str(error)

    def admin_result(futures):
        for f in futures.values():
            try:
                f.result(30)
            except KafkaException as e:
                return name_of(e.args[0])
        return "ok"

    if action == "metadata":
        a = AdminClient(auth)
        out["topics"] = sorted(t for t in a.list_topics(timeout=30).topics)
    elif action == "produce":
        topic = args[0]
        p = Producer({**auth, "message.timeout.ms": 15000})
        results = []
        p.produce(topic, key=b"k", value=b"v", partition=0,
                  on_delivery=lambda err, msg: results.append(name_of(err) if err else "ok"))
        p.flush(30)
        out["result"] = results[0] if results else "no answer"
    elif action == "consume":
        topic = args[0]
        # librdkafka needs a group id even to read assigned partitions, and looks up its
        # coordinator (which the principal may not describe: Kafka's
        # GROUP_AUTHORIZATION_FAILED, reported apart); the answer is the fetch's.
        c = Consumer({**auth, "group.id": "unused", "enable.auto.commit": False})
        c.assign([TopicPartition(topic, 0, 0)])
        deadline = time.time() + 15
        out["result"] = "nothing"
        while time.time() < deadline:
            m = c.poll(0.5)
            if m is None:
                continue
            if m.error() and name_of(m.error()) == "GROUP_AUTHORIZATION_FAILED":
                out["group"] = "GROUP_AUTHORIZATION_FAILED"
                continue
            out["result"] = name_of(m.error()) if m.error() else "ok"
            break
        if out["result"] == "nothing":
            # An assigned partition of a topic Metadata refuses to describe is not fetched
            # and not reported by librdkafka: the refusal is the topic's Metadata error.
            described = c.list_topics(topic, timeout=15).topics.get(topic)
            if described is not None and described.error is not None:
                out["result"] = name_of(described.error)
        c.close()
    elif action == "create":
        a = AdminClient(auth)  # kept until the answer: a dropped client fails its futures
        out["result"] = admin_result(a.create_topics([NewTopic(args[0], 1)]))
    elif action == "delete":
        a = AdminClient(auth)
        out["result"] = admin_result(a.delete_topics([args[0]]))
    elif action == "commit":
        topic, group_id = args
        c = Consumer({**auth, "group.id": group_id, "enable.auto.commit": False})
        try:
            committed = c.commit(offsets=[TopicPartition(topic, 0, 1)], asynchronous=False)
            errors = [name_of(tp.error) for tp in committed or [] if tp.error]
            out["result"] = errors[0] if errors else "ok"
        except KafkaException as e:
            out["result"] = name_of(e.args[0])
        if out["result"] == "_WAIT_COORD":
            # librdkafka fails the commit for want of a coordinator and reports why (the
            # FindCoordinator error) as an error event.
            deadline = time.time() + 15
            while time.time() < deadline:
                m = c.poll(0.5)
                if m is not None and m.error():
                    out["result"] = name_of(m.error())
                    break
        c.close()
    elif action in ("acl-add", "acl-remove"):
        principal, topic = args[0], args[1]
        a = AdminClient(auth)
        if action == "acl-add":
            operation = getattr(AclOperation, args[2])
            binding = AclBinding(ResourceType.TOPIC, topic, ResourcePatternType.LITERAL,
                                 principal, "*", operation, AclPermissionType.ALLOW)
            out["result"] = admin_result(a.create_acls([binding]))
        else:
            f = AclBindingFilter(ResourceType.TOPIC, topic, ResourcePatternType.LITERAL,
                                 principal, None, AclOperation.ANY, AclPermissionType.ANY)
            futures = a.delete_acls([f])
            try:
                deleted = list(futures.values())[0].result(30)
                out["deleted"] = len(deleted)
            except KafkaException as e:
                out["result"] = name_of(e.args[0])
    elif action == "acl-list":
        a = AdminClient(auth)
        f = AclBindingFilter(ResourceType.ANY, None, ResourcePatternType.ANY, None, None,
                             AclOperation.ANY, AclPermissionType.ANY)
        try:
            acls = a.describe_acls(f).result(30)
            out["acls"] = sorted(
                f"{b.principal} {b.permission_type.name} {b.operation.name} "
                f"{b.restype.name} {b.resource_pattern_type.name} {b.name}" for b in acls)
        except KafkaException as e:
            out["result"] = name_of(e.args[0])
    else:
        fail(f"no probe {action}")
    print(json.dumps(out))


if __name__ == "__main__":
    command, args = sys.argv[1], sys.argv[2:]
    {"roundtrip": roundtrip, "admin": admin, "describe": describe, "group": group,
     "read-committed": read_committed, "acl-probe": acl_probe}[command](*args)
