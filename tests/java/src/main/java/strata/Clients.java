package strata;

import java.io.FileReader;
import java.io.IOException;
import java.io.PrintWriter;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.TreeMap;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicLong;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AlterConfigOp;
import org.apache.kafka.clients.admin.Config;
import org.apache.kafka.clients.admin.ConfigEntry;
import org.apache.kafka.clients.admin.DescribeClusterResult;
import org.apache.kafka.clients.admin.NewPartitions;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.admin.OffsetSpec;
import org.apache.kafka.clients.admin.RecordsToDelete;
import org.apache.kafka.clients.admin.TopicDescription;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.clients.producer.RecordMetadata;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.config.ConfigResource;
import org.apache.kafka.common.header.Header;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;
import org.apache.kafka.common.serialization.ByteArraySerializer;
import org.apache.kafka.common.utils.Utils;

/**
 * Kafka's own Java client against Strata's Kafka listener, driven by tests/tests/kafka.rs.
 *
 * <pre>
 * roundtrip BOOTSTRAP TOPIC PARTITIONS RECORDS OUT [PROPS]
 *     AdminClient creates TOPIC; a producer with its defaults (idempotent, acks=all) sends
 *     RECORDS keyed records with headers, a fifth in each codec; a consumer reads them back
 *     by assignment from the beginning; every acknowledged record must be there once, in
 *     its key's murmur2 partition, in offset order, headers intact. Writes what it read to
 *     OUT (JSON lines: partition, offset, key, value, headers).
 * produce BOOTSTRAP TOPIC RECORDS RATE OUT [PROPS]
 *     A producer with its defaults sends RECORDS keyed records at about RATE a second and
 *     writes each acknowledged one to OUT ("key partition offset"); failed sends to
 *     stderr. For the SIGKILL test.
 * admin BOOTSTRAP TOPIC [PROPS]
 *     AdminClient: create (with a config), describe and alter configs, create partitions,
 *     list offsets, delete records, describe cluster and topic, delete; prints JSON.
 * group BOOTSTRAP TOPIC GROUP OUT [PROPS]
 *     A member of a consumer group: see {@link #group}.
 * group-describe BOOTSTRAP GROUP TOPIC [PROPS]
 *     AdminClient's view of a group: see {@link #groupDescribe}.
 * txn-produce BOOTSTRAP TOPIC TXN_ID TRANSACTIONS PER [PROPS]
 *     Transactions alternately committed and aborted: see {@link #txnProduce}.
 * read-committed BOOTSTRAP TOPIC OUT [PROPS]
 *     A read_committed reader: see {@link #readCommitted}.
 * transform BOOTSTRAP IN OUT GROUP TXN_ID EXPECTED IDLE_MS [PROPS]
 *     Consume-transform-produce in transactions: see {@link #transform}.
 * topic-id BOOTSTRAP TOPIC
 *     Prints the topic's id as the client shows it (base64).
 * acl-probe BOOTSTRAP TOKEN ACTION ARGS...
 *     One operation with the token (SASL/OAUTHBEARER): prints "ok" or Kafka's error name
 *     (exit 0 either way): see {@link #aclProbe}.
 * try BOOTSTRAP TOPIC PROPS
 *     Creates TOPIC and sends one record with the given security settings: prints "ok",
 *     or the error's class and message (exit 0 either way).
 * </pre>
 */
public final class Clients {
    static final String[] CODECS = {"none", "gzip", "snappy", "lz4", "zstd"};

    public static void main(String[] args) throws Exception {
        switch (args[0]) {
            case "roundtrip" -> roundtrip(args[1], args[2], Integer.parseInt(args[3]),
                    Integer.parseInt(args[4]), args[5], props(args, 6));
            case "produce" -> produce(args[1], args[2], Integer.parseInt(args[3]),
                    Integer.parseInt(args[4]), args[5], props(args, 6));
            case "admin" -> admin(args[1], args[2], props(args, 3));
            case "try" -> tryAccess(args[1], args[2], props(args, 3));
            case "acl-probe" -> aclProbe(args[1], args[2], args[3],
                    java.util.Arrays.copyOfRange(args, 4, args.length));
            case "group" -> group(args[1], args[2], args[3], args[4], props(args, 5));
            case "group-describe" -> groupDescribe(args[1], args[2], args[3], props(args, 4));
            case "txn-produce" -> txnProduce(args[1], args[2], args[3], Integer.parseInt(args[4]),
                    Integer.parseInt(args[5]), props(args, 6));
            case "read-committed" -> readCommitted(args[1], args[2], args[3], props(args, 4));
            case "transform" -> transform(args[1], args[2], args[3], args[4], args[5],
                    Long.parseLong(args[6]), Long.parseLong(args[7]), props(args, 8));
            case "topic-id" -> {
                try (Admin admin = Admin.create(with(props(args, 3), args[1]))) {
                    System.out.println(admin.describeTopics(List.of(args[2])).allTopicNames()
                            .get(30, TimeUnit.SECONDS).get(args[2]).topicId().toString());
                }
            }
            default -> throw new IllegalArgumentException("unknown command " + args[0]);
        }
    }

    static Properties props(String[] args, int index) throws IOException {
        Properties props = new Properties();
        if (args.length > index) {
            try (FileReader reader = new FileReader(args[index])) {
                props.load(reader);
            }
        }
        return props;
    }

    static Properties with(Properties base, String bootstrap) {
        Properties props = new Properties();
        props.putAll(base);
        props.put("bootstrap.servers", bootstrap);
        return props;
    }

    static void fail(String message) {
        System.err.println("FAIL: " + message);
        System.exit(1);
    }

    static String json(String s) {
        StringBuilder out = new StringBuilder("\"");
        for (char c : s.toCharArray()) {
            switch (c) {
                case '"' -> out.append("\\\"");
                case '\\' -> out.append("\\\\");
                case '\n' -> out.append("\\n");
                default -> {
                    if (c < 0x20) {
                        out.append(String.format("\\u%04x", (int) c));
                    } else {
                        out.append(c);
                    }
                }
            }
        }
        return out.append('"').toString();
    }

    static String text(byte[] bytes) {
        return bytes == null ? "" : new String(bytes, StandardCharsets.UTF_8);
    }

    static KafkaProducer<byte[], byte[]> producer(Properties props) {
        return new KafkaProducer<>(props, new ByteArraySerializer(), new ByteArraySerializer());
    }

    /** Kafka's default partitioner for a keyed record. */
    static int partitionOf(byte[] key, int partitions) {
        return Utils.toPositive(Utils.murmur2(key)) % partitions;
    }

    record Sent(String value, List<String[]> headers, int partition, long offset) {}

    static void roundtrip(String bootstrap, String topic, int partitions, int count, String out,
            Properties base) throws Exception {
        long started = System.currentTimeMillis();
        try (Admin admin = Admin.create(with(base, bootstrap))) {
            admin.createTopics(List.of(new NewTopic(topic, partitions, (short) 1))).all()
                    .get(30, TimeUnit.SECONDS);
        }
        Map<String, Sent> sent = new ConcurrentHashMap<>();
        List<String> errors = new ArrayList<>();
        int perCodec = count / CODECS.length;
        for (int n = 0; n < CODECS.length; n++) {
            String codec = CODECS[n];
            Properties props = with(base, bootstrap);
            props.put("compression.type", codec);
            props.put("linger.ms", "20");
            try (KafkaProducer<byte[], byte[]> producer = producer(props)) {
                for (int i = n * perCodec; i < (n + 1) * perCodec; i++) {
                    String key = "key-" + i;
                    String value = ("value-" + i + "-" + codec + "-").repeat(1 + i % 7);
                    ProducerRecord<byte[], byte[]> record = new ProducerRecord<>(topic,
                            key.getBytes(StandardCharsets.UTF_8), value.getBytes(StandardCharsets.UTF_8));
                    record.headers().add("n", Integer.toString(i).getBytes(StandardCharsets.UTF_8));
                    record.headers().add("codec", codec.getBytes(StandardCharsets.UTF_8));
                    record.headers().add("n", "again".getBytes(StandardCharsets.UTF_8));
                    List<String[]> headers = List.of(new String[] {"n", Integer.toString(i)},
                            new String[] {"codec", codec}, new String[] {"n", "again"});
                    producer.send(record, (meta, error) -> {
                        if (error != null) {
                            synchronized (errors) {
                                errors.add(error.toString());
                            }
                        } else {
                            sent.put(key, new Sent(value, headers, meta.partition(), meta.offset()));
                        }
                    });
                }
                producer.flush();
            }
        }
        if (!errors.isEmpty()) {
            fail(errors.size() + " sends failed, e.g. " + errors.get(0));
        }
        Properties props = with(base, bootstrap);
        props.put("enable.auto.commit", "false");
        List<ConsumerRecord<byte[], byte[]>> read = new ArrayList<>();
        try (KafkaConsumer<byte[], byte[]> consumer = new KafkaConsumer<>(props,
                new ByteArrayDeserializer(), new ByteArrayDeserializer())) {
            List<TopicPartition> tps = new ArrayList<>();
            for (int p = 0; p < partitions; p++) {
                tps.add(new TopicPartition(topic, p));
            }
            consumer.assign(tps);
            consumer.seekToBeginning(tps);
            Map<TopicPartition, Long> ends = consumer.endOffsets(tps);
            long deadline = System.currentTimeMillis() + 120_000;
            while (System.currentTimeMillis() < deadline
                    && tps.stream().anyMatch(tp -> consumer.position(tp) < ends.get(tp))) {
                for (ConsumerRecord<byte[], byte[]> r : consumer.poll(Duration.ofSeconds(1))) {
                    read.add(r);
                }
            }
        }
        Map<String, ConsumerRecord<byte[], byte[]>> byKey = new HashMap<>();
        Map<Integer, Long> last = new HashMap<>();
        try (PrintWriter writer = new PrintWriter(out, StandardCharsets.UTF_8)) {
            for (ConsumerRecord<byte[], byte[]> r : read) {
                String key = text(r.key());
                if (byKey.put(key, r) != null) {
                    fail(key + " read twice");
                }
                if (r.offset() <= last.getOrDefault(r.partition(), -1L)) {
                    fail("partition " + r.partition() + " out of order at " + r.offset());
                }
                last.put(r.partition(), r.offset());
                StringBuilder headers = new StringBuilder("[");
                for (Header h : r.headers()) {
                    if (headers.length() > 1) {
                        headers.append(',');
                    }
                    headers.append('[').append(json(h.key())).append(',').append(json(text(h.value())))
                            .append(']');
                }
                headers.append(']');
                writer.println("{\"partition\":" + r.partition() + ",\"offset\":" + r.offset()
                        + ",\"key\":" + json(key) + ",\"value\":" + json(text(r.value()))
                        + ",\"headers\":" + headers + "}");
            }
        }
        if (sent.size() != count / CODECS.length * CODECS.length || read.size() != sent.size()) {
            fail("acknowledged " + sent.size() + ", read " + read.size());
        }
        for (Map.Entry<String, Sent> e : sent.entrySet()) {
            ConsumerRecord<byte[], byte[]> r = byKey.get(e.getKey());
            Sent s = e.getValue();
            if (r == null) {
                fail(e.getKey() + " acknowledged but not read");
            }
            if (!text(r.value()).equals(s.value())) {
                fail(e.getKey() + ": value differs");
            }
            List<String[]> headers = new ArrayList<>();
            for (Header h : r.headers()) {
                headers.add(new String[] {h.key(), text(h.value())});
            }
            if (headers.size() != s.headers().size()) {
                fail(e.getKey() + ": headers differ");
            }
            for (int i = 0; i < headers.size(); i++) {
                if (!java.util.Arrays.equals(headers.get(i), s.headers().get(i))) {
                    fail(e.getKey() + ": header " + i + " differs");
                }
            }
            int expected = partitionOf(e.getKey().getBytes(StandardCharsets.UTF_8), partitions);
            if (r.partition() != expected || r.partition() != s.partition() || r.offset() != s.offset()) {
                fail(e.getKey() + " acknowledged at " + s.partition() + "/" + s.offset() + ", read at "
                        + r.partition() + "/" + r.offset() + ", murmur2 says " + expected);
            }
        }
        System.out.println("{\"client\":\"java\",\"acknowledged\":" + sent.size() + ",\"read\":"
                + read.size() + ",\"seconds\":" + (System.currentTimeMillis() - started) / 1000.0 + "}");
    }

    static void produce(String bootstrap, String topic, int count, int rate, String out, Properties base)
            throws Exception {
        AtomicLong failed = new AtomicLong();
        long started = System.nanoTime();
        try (PrintWriter writer = new PrintWriter(out, StandardCharsets.UTF_8);
                KafkaProducer<byte[], byte[]> producer = producer(with(base, bootstrap))) {
            for (int i = 0; i < count; i++) {
                long due = started + (long) i * 1_000_000_000L / rate;
                long wait = due - System.nanoTime();
                if (wait > 0) {
                    TimeUnit.NANOSECONDS.sleep(wait);
                }
                String key = "java-" + i;
                producer.send(new ProducerRecord<>(topic, key.getBytes(StandardCharsets.UTF_8),
                        ("value-" + i).getBytes(StandardCharsets.UTF_8)), (RecordMetadata meta, Exception error) -> {
                            if (error != null) {
                                failed.incrementAndGet();
                                System.err.println("send of " + key + " failed: " + error);
                            } else {
                                synchronized (writer) {
                                    writer.println(key + " " + meta.partition() + " " + meta.offset());
                                }
                            }
                        });
            }
            producer.flush();
        }
        System.out.println("{\"sent\":" + count + ",\"failed\":" + failed.get() + "}");
    }

    static void admin(String bootstrap, String topic, Properties base) throws Exception {
        Map<String, Object> seen = new TreeMap<>();
        try (Admin admin = Admin.create(with(base, bootstrap))) {
            NewTopic created = new NewTopic(topic, 2, (short) 1).configs(Map.of("retention.ms", "3600000"));
            admin.createTopics(List.of(created)).all().get(30, TimeUnit.SECONDS);
            ConfigResource resource = new ConfigResource(ConfigResource.Type.TOPIC, topic);
            seen.put("configs", configs(admin, resource));
            admin.incrementalAlterConfigs(Map.of(resource, List.of(
                    new AlterConfigOp(new ConfigEntry("max.message.bytes", "2000000"), AlterConfigOp.OpType.SET),
                    new AlterConfigOp(new ConfigEntry("retention.ms", ""), AlterConfigOp.OpType.DELETE))))
                    .all().get(30, TimeUnit.SECONDS);
            seen.put("altered", configs(admin, resource));
            admin.createPartitions(Map.of(topic, NewPartitions.increaseTo(4))).all().get(30, TimeUnit.SECONDS);
            TopicDescription description = admin.describeTopics(List.of(topic)).allTopicNames()
                    .get(30, TimeUnit.SECONDS).get(topic);
            seen.put("partitions", description.partitions().size());
            seen.put("topic_id", json(description.topicId().toString()));
            long base0 = System.currentTimeMillis() - 60_000;
            try (KafkaProducer<byte[], byte[]> producer = producer(with(base, bootstrap))) {
                for (int i = 0; i < 10; i++) {
                    producer.send(new ProducerRecord<>(topic, 0, base0 + i * 1000L, null,
                            ("v" + i).getBytes(StandardCharsets.UTF_8))).get(30, TimeUnit.SECONDS);
                }
            }
            TopicPartition tp = new TopicPartition(topic, 0);
            Map<String, Object> offsets = new TreeMap<>();
            offsets.put("earliest", offset(admin, tp, OffsetSpec.earliest()));
            offsets.put("latest", offset(admin, tp, OffsetSpec.latest()));
            offsets.put("timestamp", offset(admin, tp, OffsetSpec.forTimestamp(base0 + 4500)));
            offsets.put("max_timestamp", offset(admin, tp, OffsetSpec.maxTimestamp()));
            seen.put("offsets", offsets);
            long low = admin.deleteRecords(Map.of(tp, RecordsToDelete.beforeOffset(3))).all()
                    .thenApply(v -> 0L).get(30, TimeUnit.SECONDS);
            seen.put("deleted", low);
            seen.put("earliest_after_delete", offset(admin, tp, OffsetSpec.earliest()));
            DescribeClusterResult cluster = admin.describeCluster();
            seen.put("cluster_id", json(cluster.clusterId().get(30, TimeUnit.SECONDS)));
            seen.put("nodes", cluster.nodes().get(30, TimeUnit.SECONDS).size());
            seen.put("controller", cluster.controller().get(30, TimeUnit.SECONDS).id());
            admin.deleteTopics(List.of(topic)).all().get(30, TimeUnit.SECONDS);
            seen.put("deleted_topic_listed", admin.listTopics().names().get(30, TimeUnit.SECONDS).contains(topic));
        }
        System.out.println(toJson(seen));
    }

    static Map<String, Object> configs(Admin admin, ConfigResource resource) throws Exception {
        Config config = admin.describeConfigs(List.of(resource)).all().get(30, TimeUnit.SECONDS).get(resource);
        Map<String, Object> out = new TreeMap<>();
        for (ConfigEntry entry : config.entries()) {
            out.put(entry.name(), "[" + json(entry.value()) + "," + json(entry.source().name()) + "]");
        }
        return out;
    }

    static long offset(Admin admin, TopicPartition tp, OffsetSpec spec) throws Exception {
        return admin.listOffsets(Map.of(tp, spec)).partitionResult(tp).get(30, TimeUnit.SECONDS).offset();
    }

    @SuppressWarnings("unchecked")
    static String toJson(Object value) {
        if (value instanceof Map<?, ?> map) {
            StringBuilder out = new StringBuilder("{");
            for (Map.Entry<String, Object> e : ((Map<String, Object>) map).entrySet()) {
                if (out.length() > 1) {
                    out.append(',');
                }
                out.append(json(e.getKey())).append(':').append(toJson(e.getValue()));
            }
            return out.append('}').toString();
        }
        return String.valueOf(value);
    }

    /**
     * A member of consumer group GROUP subscribed to TOPIC (classic protocol,
     * cooperative-sticky unless PROPS say otherwise), committing synchronously after each
     * poll. Writes to OUT, flushed as it goes: "R partition offset key" per record, and
     * "A ms p,p,..." / "V ms p,..." / "L ms p,..." when its assignment callbacks report
     * partitions assigned, revoked or lost (ms: wall clock). Runs until SIGTERM (then
     * commits and leaves the group) or SIGKILL.
     */
    static void group(String bootstrap, String topic, String groupId, String out, Properties base)
            throws IOException {
        Properties props = with(base, bootstrap);
        props.put("group.id", groupId);
        props.putIfAbsent("partition.assignment.strategy",
                "org.apache.kafka.clients.consumer.CooperativeStickyAssignor");
        props.put("enable.auto.commit", "false");
        props.put("auto.offset.reset", "earliest");
        props.putIfAbsent("session.timeout.ms", "10000");
        props.putIfAbsent("heartbeat.interval.ms", "1000");
        PrintWriter log = new PrintWriter(out, StandardCharsets.UTF_8);
        KafkaConsumer<byte[], byte[]> consumer = new KafkaConsumer<>(props,
                new ByteArrayDeserializer(), new ByteArrayDeserializer());
        Thread main = Thread.currentThread();
        java.util.concurrent.atomic.AtomicBoolean stopping = new java.util.concurrent.atomic.AtomicBoolean();
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            stopping.set(true);
            consumer.wakeup();
            try {
                main.join(30_000);
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
            }
        }));
        consumer.subscribe(List.of(topic), new org.apache.kafka.clients.consumer.ConsumerRebalanceListener() {
            void note(String kind, java.util.Collection<TopicPartition> partitions) {
                if (partitions.isEmpty()) {
                    return;
                }
                StringBuilder line = new StringBuilder(kind).append(' ').append(System.currentTimeMillis()).append(' ');
                String sep = "";
                for (TopicPartition tp : partitions) {
                    line.append(sep).append(tp.partition());
                    sep = ",";
                }
                log.println(line);
                log.flush();
            }

            @Override
            public void onPartitionsRevoked(java.util.Collection<TopicPartition> partitions) {
                note("V", partitions);
            }

            @Override
            public void onPartitionsAssigned(java.util.Collection<TopicPartition> partitions) {
                note("A", partitions);
            }

            @Override
            public void onPartitionsLost(java.util.Collection<TopicPartition> partitions) {
                note("L", partitions);
            }
        });
        try {
            while (!stopping.get()) {
                var records = consumer.poll(Duration.ofMillis(500));
                for (ConsumerRecord<byte[], byte[]> r : records) {
                    log.println("R " + r.partition() + " " + r.offset() + " "
                            + (r.key() == null ? "-" : new String(r.key(), StandardCharsets.UTF_8)));
                }
                log.flush();
                if (!records.isEmpty()) {
                    try {
                        consumer.commitSync();
                    } catch (org.apache.kafka.common.errors.RebalanceInProgressException
                            | org.apache.kafka.clients.consumer.CommitFailedException e) {
                        // A rebalance under way: these records come again (at least once).
                        System.err.println("group: commit refused: " + e.getMessage());
                    }
                }
            }
        } catch (org.apache.kafka.common.errors.WakeupException e) {
            // stopping
        } finally {
            consumer.close();
            log.println("C " + System.currentTimeMillis());
            log.close();
        }
    }

    /**
     * AdminClient's view of consumer group GROUP on TOPIC: describeConsumerGroups (state,
     * members and their partitions), listConsumerGroupOffsets, and the lag against the
     * latest offsets; prints JSON.
     */
    static void groupDescribe(String bootstrap, String groupId, String topic, Properties base) throws Exception {
        try (Admin admin = Admin.create(with(base, bootstrap))) {
            var description = admin.describeConsumerGroups(List.of(groupId)).all().get(30, TimeUnit.SECONDS).get(groupId);
            Map<String, Object> members = new TreeMap<>();
            for (var m : description.members()) {
                List<Integer> partitions = new ArrayList<>();
                m.assignment().topicPartitions().forEach(tp -> partitions.add(tp.partition()));
                partitions.sort(null);
                members.put(m.consumerId(), partitions);
            }
            var committed = admin.listConsumerGroupOffsets(groupId).partitionsToOffsetAndMetadata()
                    .get(30, TimeUnit.SECONDS);
            Map<TopicPartition, OffsetSpec> latest = new HashMap<>();
            committed.keySet().forEach(tp -> latest.put(tp, OffsetSpec.latest()));
            var ends = admin.listOffsets(latest).all().get(30, TimeUnit.SECONDS);
            Map<String, Object> offsets = new TreeMap<>();
            Map<String, Object> lag = new TreeMap<>();
            committed.forEach((tp, o) -> {
                if (tp.topic().equals(topic) && o != null) {
                    offsets.put(String.valueOf(tp.partition()), o.offset());
                    lag.put(String.valueOf(tp.partition()), ends.get(tp).offset() - o.offset());
                }
            });
            Map<String, Object> out = new TreeMap<>();
            out.put("state", json(description.groupState().toString()));
            out.put("members", members);
            out.put("offsets", offsets);
            out.put("lag", lag);
            System.out.println(toJson(out));
        }
    }

    /**
     * A transactional producer (TXN_ID) sends TRANSACTIONS transactions of PER records
     * each to TOPIC, keys "t{n}-{i}", committing the even ones and aborting the odd ones;
     * prints JSON: the keys of committed and of aborted transactions, by count.
     */
    static void txnProduce(String bootstrap, String topic, String txnId, int transactions, int per,
            Properties base) throws Exception {
        Properties props = with(base, bootstrap);
        props.put("transactional.id", txnId);
        long committed = 0;
        long aborted = 0;
        try (KafkaProducer<byte[], byte[]> producer = producer(props)) {
            producer.initTransactions();
            for (int t = 0; t < transactions; t++) {
                producer.beginTransaction();
                for (int i = 0; i < per; i++) {
                    String key = "t" + t + "-" + i;
                    producer.send(new ProducerRecord<>(topic, key.getBytes(StandardCharsets.UTF_8),
                            ("value-" + key).getBytes(StandardCharsets.UTF_8)));
                }
                if (t % 2 == 0) {
                    producer.commitTransaction();
                    committed += per;
                } else {
                    producer.flush();
                    producer.abortTransaction();
                    aborted += per;
                }
            }
        }
        System.out.println("{\"committed\":" + committed + ",\"aborted\":" + aborted + "}");
    }

    /**
     * Reads every partition of TOPIC from the beginning with isolation.level
     * read_committed until it has seen the end of each (the last stable offset) with
     * nothing new for 3 s; writes each record's key to OUT, one a line.
     */
    static void readCommitted(String bootstrap, String topic, String out, Properties base) throws Exception {
        Properties props = with(base, bootstrap);
        props.put("isolation.level", "read_committed");
        props.put("enable.auto.commit", "false");
        try (KafkaConsumer<byte[], byte[]> consumer = new KafkaConsumer<>(props,
                new ByteArrayDeserializer(), new ByteArrayDeserializer());
                PrintWriter writer = new PrintWriter(out, StandardCharsets.UTF_8)) {
            List<TopicPartition> tps = new ArrayList<>();
            consumer.partitionsFor(topic).forEach(p -> tps.add(new TopicPartition(topic, p.partition())));
            consumer.assign(tps);
            consumer.seekToBeginning(tps);
            long idleSince = System.currentTimeMillis();
            long deadline = System.currentTimeMillis() + 120_000;
            while (System.currentTimeMillis() < deadline) {
                var records = consumer.poll(Duration.ofMillis(500));
                for (ConsumerRecord<byte[], byte[]> r : records) {
                    writer.println(new String(r.key(), StandardCharsets.UTF_8));
                }
                if (!records.isEmpty()) {
                    idleSince = System.currentTimeMillis();
                } else if (System.currentTimeMillis() - idleSince > 3000) {
                    break;
                }
            }
        }
    }

    /**
     * Consume-transform-produce, exactly once: a member of GROUP reads IN (read_committed)
     * and, in one transaction per poll (TXN_ID), writes each record's key to OUT with the
     * value "done-" + value, and the consumed offsets with sendOffsetsToTransaction. On an
     * error it aborts and goes back to the committed offsets (a fatal one: starts over
     * with a new producer and consumer). Stops after IDLE_MS without input once it has
     * handled at least EXPECTED records in committed transactions; prints how many
     * transactions committed and aborted.
     */
    static void transform(String bootstrap, String in, String out, String groupId, String txnId,
            long expected, long idleMs, Properties base) throws Exception {
        long done = 0;
        long commits = 0;
        long aborts = 0;
        long restarts = 0;
        long deadline = System.currentTimeMillis() + 300_000;
        while (System.currentTimeMillis() < deadline) {
            Properties cprops = with(base, bootstrap);
            cprops.put("group.id", groupId);
            cprops.put("isolation.level", "read_committed");
            cprops.put("enable.auto.commit", "false");
            cprops.put("auto.offset.reset", "earliest");
            cprops.put("session.timeout.ms", "10000");
            Properties pprops = with(base, bootstrap);
            pprops.put("transactional.id", txnId);
            pprops.put("transaction.timeout.ms", "30000");
            pprops.put("delivery.timeout.ms", "60000");
            try (KafkaConsumer<byte[], byte[]> consumer = new KafkaConsumer<>(cprops,
                    new ByteArrayDeserializer(), new ByteArrayDeserializer());
                    KafkaProducer<byte[], byte[]> producer = producer(pprops)) {
                producer.initTransactions();
                consumer.subscribe(List.of(in));
                long idleSince = System.currentTimeMillis();
                while (System.currentTimeMillis() < deadline) {
                    var records = consumer.poll(Duration.ofMillis(500));
                    if (records.isEmpty()) {
                        if (done >= expected && System.currentTimeMillis() - idleSince > idleMs) {
                            System.out.println("{\"handled\":" + done + ",\"commits\":" + commits
                                    + ",\"aborts\":" + aborts + ",\"restarts\":" + restarts + "}");
                            return;
                        }
                        continue;
                    }
                    idleSince = System.currentTimeMillis();
                    try {
                        producer.beginTransaction();
                        Map<TopicPartition, org.apache.kafka.clients.consumer.OffsetAndMetadata> offsets = new HashMap<>();
                        for (ConsumerRecord<byte[], byte[]> r : records) {
                            byte[] value = ("done-" + new String(r.value(), StandardCharsets.UTF_8))
                                    .getBytes(StandardCharsets.UTF_8);
                            producer.send(new ProducerRecord<>(out, r.key(), value));
                            offsets.put(new TopicPartition(r.topic(), r.partition()),
                                    new org.apache.kafka.clients.consumer.OffsetAndMetadata(r.offset() + 1));
                        }
                        producer.sendOffsetsToTransaction(offsets, consumer.groupMetadata());
                        producer.commitTransaction();
                        commits++;
                        done += records.count();
                    } catch (org.apache.kafka.common.errors.ProducerFencedException
                            | org.apache.kafka.common.errors.InvalidProducerEpochException
                            | org.apache.kafka.common.errors.OutOfOrderSequenceException
                            | org.apache.kafka.common.errors.FencedInstanceIdException
                            | org.apache.kafka.common.errors.UnsupportedVersionException
                            | org.apache.kafka.common.errors.AuthorizationException e) {
                        System.err.println("transform: fatal " + e + "; starting over");
                        restarts++;
                        break;
                    } catch (org.apache.kafka.common.KafkaException e) {
                        System.err.println("transform: " + e + "; aborting");
                        try {
                            producer.abortTransaction();
                            aborts++;
                        } catch (org.apache.kafka.common.KafkaException e2) {
                            System.err.println("transform: abort failed " + e2 + "; starting over");
                            restarts++;
                            break;
                        }
                        // Back to the committed offsets.
                        var assigned = consumer.assignment();
                        var committed = consumer.committed(assigned);
                        for (TopicPartition tp : assigned) {
                            var c = committed.get(tp);
                            if (c == null) {
                                consumer.seekToBeginning(List.of(tp));
                            } else {
                                consumer.seek(tp, c.offset());
                            }
                        }
                    }
                }
            } catch (org.apache.kafka.common.KafkaException e) {
                System.err.println("transform: " + e + "; starting over");
                restarts++;
            }
        }
        fail("transform did not finish in time: handled " + done);
    }

    static void tryAccess(String bootstrap, String topic, Properties base) {
        Properties props = with(base, bootstrap);
        props.put("request.timeout.ms", "10000");
        props.put("default.api.timeout.ms", "15000");
        props.put("max.block.ms", "15000");
        props.put("delivery.timeout.ms", "20000");
        try (Admin admin = Admin.create(props)) {
            admin.createTopics(List.of(new NewTopic(topic, 1, (short) 1))).all().get(20, TimeUnit.SECONDS);
            try (KafkaProducer<byte[], byte[]> producer = producer(props)) {
                producer.send(new ProducerRecord<>(topic, "k".getBytes(StandardCharsets.UTF_8),
                        "v".getBytes(StandardCharsets.UTF_8))).get(20, TimeUnit.SECONDS);
            }
            System.out.println("ok");
        } catch (Exception e) {
            Throwable cause = e.getCause() != null ? e.getCause() : e;
            System.out.println(cause.getClass().getSimpleName() + ": " + cause.getMessage());
        }
    }

    /**
     * One operation as the token's principal; prints "ok" or the Kafka error the client
     * got (its name, as {@code Errors} has it). Actions:
     * <pre>
     * idempotent TOPIC              one record from an idempotent producer (InitProducerId)
     * transactional TOPIC TXN_ID    one record in a committed transaction
     * list-offsets TOPIC            partition 0's latest offset (ListOffsets)
     * describe-configs TOPIC        the topic's configs
     * alter-configs TOPIC           sets retention.ms (IncrementalAlterConfigs)
     * create-partitions TOPIC N     grows the topic to N partitions
     * delete-records TOPIC          deletes partition 0's records below offset 1
     * group-describe GROUP          DescribeGroups
     * group-offsets GROUP           the group's committed offsets (OffsetFetch)
     * group-delete GROUP            DeleteGroups
     * acl-list                      DescribeAcls (every ACL)
     * </pre>
     */
    static void aclProbe(String bootstrap, String token, String action, String[] args) throws Exception {
        Properties props = new Properties();
        props.put("bootstrap.servers", bootstrap);
        props.put("security.protocol", "SASL_PLAINTEXT");
        props.put("sasl.mechanism", "OAUTHBEARER");
        props.put("sasl.login.callback.handler.class", TokenLoginCallbackHandler.class.getName());
        props.put("sasl.jaas.config", "org.apache.kafka.common.security.oauthbearer.OAuthBearerLoginModule"
                + " required token=\"" + token + "\";");
        props.put("request.timeout.ms", "10000");
        props.put("default.api.timeout.ms", "15000");
        props.put("max.block.ms", "15000");
        props.put("delivery.timeout.ms", "20000");
        try {
            switch (action) {
                case "idempotent", "transactional" -> {
                    props.put("enable.idempotence", "true");
                    props.put("acks", "all");
                    if (action.equals("transactional")) {
                        props.put("transactional.id", args[1]);
                    }
                    try (KafkaProducer<byte[], byte[]> producer = producer(props)) {
                        ProducerRecord<byte[], byte[]> record = new ProducerRecord<>(args[0], 0,
                                "k".getBytes(StandardCharsets.UTF_8), "v".getBytes(StandardCharsets.UTF_8));
                        if (action.equals("transactional")) {
                            producer.initTransactions();
                            producer.beginTransaction();
                            producer.send(record).get(20, TimeUnit.SECONDS);
                            producer.commitTransaction();
                        } else {
                            producer.send(record).get(20, TimeUnit.SECONDS);
                        }
                    }
                }
                default -> {
                    try (Admin admin = Admin.create(props)) {
                        adminProbe(admin, action, args);
                    }
                }
            }
            System.out.println("ok");
        } catch (Exception e) {
            Throwable cause = e;
            while (cause.getCause() != null && !(cause instanceof org.apache.kafka.common.errors.ApiException)) {
                cause = cause.getCause();
            }
            org.apache.kafka.common.protocol.Errors error = org.apache.kafka.common.protocol.Errors.forException(cause);
            System.out.println(error == org.apache.kafka.common.protocol.Errors.UNKNOWN_SERVER_ERROR
                    ? cause.getClass().getSimpleName() + ": " + cause.getMessage() : error.name());
        }
    }

    static void adminProbe(Admin admin, String action, String[] args) throws Exception {
        if (action.equals("acl-list")) {
            admin.describeAcls(org.apache.kafka.common.acl.AclBindingFilter.ANY).values().get(20, TimeUnit.SECONDS);
            return;
        }
        TopicPartition first = new TopicPartition(args[0], 0);
        ConfigResource topic = new ConfigResource(ConfigResource.Type.TOPIC, args[0]);
        switch (action) {
            case "list-offsets" -> admin.listOffsets(Map.of(first, OffsetSpec.latest())).all()
                    .get(20, TimeUnit.SECONDS);
            case "describe-configs" -> admin.describeConfigs(List.of(topic)).all().get(20, TimeUnit.SECONDS);
            case "alter-configs" -> admin.incrementalAlterConfigs(Map.of(topic, List.of(new AlterConfigOp(
                    new ConfigEntry("retention.ms", "7200000"), AlterConfigOp.OpType.SET)))).all()
                    .get(20, TimeUnit.SECONDS);
            case "create-partitions" -> admin.createPartitions(Map.of(args[0],
                    NewPartitions.increaseTo(Integer.parseInt(args[1])))).all().get(20, TimeUnit.SECONDS);
            case "delete-records" -> admin.deleteRecords(Map.of(first, RecordsToDelete.beforeOffset(1))).all()
                    .get(20, TimeUnit.SECONDS);
            case "group-describe" -> admin.describeConsumerGroups(List.of(args[0])).all()
                    .get(20, TimeUnit.SECONDS);
            case "group-offsets" -> admin.listConsumerGroupOffsets(args[0]).partitionsToOffsetAndMetadata()
                    .get(20, TimeUnit.SECONDS);
            case "group-delete" -> admin.deleteConsumerGroups(List.of(args[0])).all().get(20, TimeUnit.SECONDS);
            default -> throw new IllegalArgumentException("no probe " + action);
        }
    }
}
