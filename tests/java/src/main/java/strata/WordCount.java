package strata;

import java.io.PrintWriter;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.TreeMap;
import java.util.concurrent.CountDownLatch;

import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.serialization.LongDeserializer;
import org.apache.kafka.common.serialization.Serdes;
import org.apache.kafka.common.serialization.StringDeserializer;
import org.apache.kafka.streams.KafkaStreams;
import org.apache.kafka.streams.StreamsBuilder;
import org.apache.kafka.streams.StreamsConfig;
import org.apache.kafka.streams.kstream.Consumed;
import org.apache.kafka.streams.kstream.Grouped;
import org.apache.kafka.streams.kstream.Materialized;
import org.apache.kafka.streams.kstream.Produced;
import org.apache.kafka.streams.state.Stores;

/**
 * Kafka Streams word count against Strata's Kafka listener, driven by
 * tests/tests/kafka_streams_connect.rs.
 *
 * <pre>
 * run BOOTSTRAP INPUT OUTPUT APP_ID STATE_DIR
 *     Counts the words of INPUT's lines (lower-cased, split on non-word characters) with
 *     processing.guarantee=exactly_once_v2, writing each word's running count to OUTPUT;
 *     runs until SIGTERM.
 * counts BOOTSTRAP OUTPUT OUT
 *     Reads OUTPUT from the beginning, read_committed, until nothing new comes for 3 s,
 *     and writes each word's last count to OUT ("word count" lines).
 * </pre>
 */
public final class WordCount {
    public static void main(String[] args) throws Exception {
        switch (args[0]) {
            case "run" -> run(args[1], args[2], args[3], args[4], args[5]);
            case "counts" -> counts(args[1], args[2], args[3]);
            default -> throw new IllegalArgumentException("run or counts");
        }
    }

    static void run(String bootstrap, String input, String output, String appId, String stateDir)
            throws InterruptedException {
        StreamsBuilder builder = new StreamsBuilder();
        builder.stream(input, Consumed.with(Serdes.String(), Serdes.String()))
                .flatMapValues(line -> Arrays.asList(line.toLowerCase().split("\\W+")))
                .filter((key, word) -> !word.isEmpty())
                .groupBy((key, word) -> word, Grouped.with(Serdes.String(), Serdes.String()))
                .count(Materialized.<String, Long>as(Stores.inMemoryKeyValueStore("counts"))
                        .withKeySerde(Serdes.String())
                        .withValueSerde(Serdes.Long()))
                .toStream()
                .to(output, Produced.with(Serdes.String(), Serdes.Long()));
        Properties props = new Properties();
        props.put(StreamsConfig.APPLICATION_ID_CONFIG, appId);
        props.put(StreamsConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        props.put(StreamsConfig.PROCESSING_GUARANTEE_CONFIG, StreamsConfig.EXACTLY_ONCE_V2);
        props.put(StreamsConfig.STATE_DIR_CONFIG, stateDir);
        props.put(StreamsConfig.consumerPrefix("session.timeout.ms"), "10000");
        props.put(StreamsConfig.consumerPrefix("heartbeat.interval.ms"), "1000");
        KafkaStreams streams = new KafkaStreams(builder.build(), props);
        CountDownLatch stopped = new CountDownLatch(1);
        streams.setUncaughtExceptionHandler(e -> {
            System.err.println("WordCount: " + e + "; replacing the thread");
            return org.apache.kafka.streams.errors.StreamsUncaughtExceptionHandler
                    .StreamThreadExceptionResponse.REPLACE_THREAD;
        });
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            streams.close(Duration.ofSeconds(20));
            stopped.countDown();
        }));
        streams.start();
        stopped.await();
    }

    static void counts(String bootstrap, String output, String out) throws Exception {
        Properties props = new Properties();
        props.put("bootstrap.servers", bootstrap);
        props.put("isolation.level", "read_committed");
        props.put("enable.auto.commit", "false");
        Map<String, Long> last = new TreeMap<>();
        try (KafkaConsumer<String, Long> consumer = new KafkaConsumer<>(props,
                new StringDeserializer(), new LongDeserializer())) {
            List<TopicPartition> tps = new ArrayList<>();
            consumer.partitionsFor(output).forEach(p -> tps.add(new TopicPartition(output, p.partition())));
            consumer.assign(tps);
            consumer.seekToBeginning(tps);
            long idleSince = System.currentTimeMillis();
            long deadline = System.currentTimeMillis() + 120_000;
            while (System.currentTimeMillis() < deadline) {
                var records = consumer.poll(Duration.ofMillis(500));
                for (ConsumerRecord<String, Long> r : records) {
                    last.put(r.key(), r.value());
                }
                if (!records.isEmpty()) {
                    idleSince = System.currentTimeMillis();
                } else if (System.currentTimeMillis() - idleSince > 3000) {
                    break;
                }
            }
        }
        try (PrintWriter writer = new PrintWriter(out, StandardCharsets.UTF_8)) {
            last.forEach((word, count) -> writer.println(word + " " + count));
        }
    }
}
