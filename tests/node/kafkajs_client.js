// KafkaJS against Strata's Kafka listener, driven by tests/tests/kafka.rs:
//
//   node kafkajs_client.js BOOTSTRAP TOPIC PARTITIONS RECORDS CONSUMED_FILE
//
// Creates TOPIC with KafkaJS's admin client, then an idempotent producer sends RECORDS
// keyed records with headers, a quarter in each codec KafkaJS has here (none, gzip,
// snappy, lz4; its zstd codec needs a native build), and prints one JSON object: what
// was acknowledged, per partition, in send order. Then a KafkaJS consumer reads the topic
// from the beginning (KafkaJS has no assign(): it reads through a consumer group, which
// is given every partition) and writes each record it got, in the order it got them, to
// CONSUMED_FILE as JSON lines. The test checks both against `strata consume --json`.
//
//   node kafkajs_client.js group BOOTSTRAP TOPIC GROUP OUT_FILE
//
// A member of consumer group GROUP (classic protocol, KafkaJS's eager round-robin
// assignor) until SIGTERM, driven by tests/tests/kafka_groups.rs. It writes to OUT_FILE
// what the Java and Python members write: `R partition offset key` for each record,
// `A ms partitions` when partitions are assigned, `V ms partitions` when they are revoked
// (KafkaJS revokes everything when a rebalance begins, after its fetchers have stopped),
// `L ms partitions` when they are lost (the coordinator forgot the member), `C ms` at a
// clean stop. It commits after each batch.
const { Kafka, CompressionTypes, CompressionCodecs, logLevel } = require('kafkajs');
const SnappyCodec = require('kafkajs-snappy');
const LZ4Codec = require('@2l/kafkajs-lz4');

CompressionCodecs[CompressionTypes.Snappy] = SnappyCodec;
CompressionCodecs[CompressionTypes.LZ4] = new LZ4Codec().codec;

const CODECS = [
  ['none', CompressionTypes.None],
  ['gzip', CompressionTypes.GZIP],
  ['snappy', CompressionTypes.Snappy],
  ['lz4', CompressionTypes.LZ4],
];

async function main() {
  const [bootstrap, topic, partitions, records, consumedFile] = process.argv.slice(2);
  const count = Number(records);
  const kafka = new Kafka({ clientId: 'strata-test', brokers: bootstrap.split(','), logLevel: logLevel.ERROR });
  const admin = kafka.admin();
  await admin.connect();
  const created = await admin.createTopics({ topics: [{ topic, numPartitions: Number(partitions) }], waitForLeaders: true });
  if (!created) throw new Error(`topic ${topic} was not created`);
  await admin.disconnect();
  const producer = kafka.producer({ idempotent: true, maxInFlightRequests: 1 });
  await producer.connect();
  const perCodec = Math.floor(count / CODECS.length);
  // key -> [partition, offset]
  const acked = {};
  const batch = 500;
  for (let n = 0; n < CODECS.length; n++) {
    const [codec, compression] = CODECS[n];
    for (let start = n * perCodec; start < (n + 1) * perCodec; start += batch) {
      const messages = [];
      for (let i = start; i < Math.min(start + batch, (n + 1) * perCodec); i++) {
        messages.push({
          key: `key-${i}`,
          value: `value-${i}-${codec}-`.repeat(1 + (i % 7)),
          headers: { n: String(i), codec },
        });
      }
      const meta = await producer.send({ topic, compression, acks: -1, messages });
      // One entry per partition: its first offset; the partition's messages follow in order.
      const firsts = new Map(meta.map((m) => [m.partition, BigInt(m.baseOffset)]));
      const next = new Map();
      // KafkaJS partitions each key the Java way (murmur2); the test checks that too.
      const partitioner = require('kafkajs/src/producer/partitioners/default')();
      for (const m of messages) {
        const p = partitioner({ topic, partitionMetadata: Array.from({ length: Number(partitions) }, (_, i) => ({ partitionId: i, leader: 0 })), message: { key: m.key } });
        const offset = next.has(p) ? next.get(p) : firsts.get(p);
        acked[m.key] = [p, Number(offset)];
        next.set(p, offset + 1n);
      }
    }
  }
  await producer.disconnect();
  await consumeAll(kafka, topic, count, consumedFile);
  console.log(JSON.stringify({ client: 'kafkajs', codecs: CODECS.map((c) => c[0]), acknowledged: acked }));
}

// Reads `count` records of `topic` from the beginning through a consumer group, and
// writes them as JSON lines [partition, offset, key, value, headers].
async function consumeAll(kafka, topic, count, file) {
  const fs = require('fs');
  const out = fs.createWriteStream(file);
  const consumer = kafka.consumer({ groupId: `kafkajs-${topic}`, sessionTimeout: 10000, heartbeatInterval: 1000 });
  await consumer.connect();
  await consumer.subscribe({ topic, fromBeginning: true });
  let seen = 0;
  let done;
  const finished = new Promise((resolve) => { done = resolve; });
  await consumer.run({
    eachBatch: async ({ batch }) => {
      for (const m of batch.messages) {
        const headers = Object.entries(m.headers || {}).map(([k, v]) => [k, v.toString()]);
        out.write(JSON.stringify([batch.partition, Number(m.offset), m.key && m.key.toString(), m.value && m.value.toString(), headers]) + '\n');
        seen += 1;
      }
      if (seen >= count) done();
    },
  });
  const timer = setTimeout(() => done(), 120000);
  await finished;
  clearTimeout(timer);
  await consumer.disconnect();
  await new Promise((resolve) => out.end(resolve));
}

async function group(bootstrap, topic, groupId, outFile) {
  const fs = require('fs');
  const out = fs.openSync(outFile, 'w');
  const line = (text) => fs.writeSync(out, text + '\n');
  let held = [];
  const note = (kind, partitions) => {
    if (partitions.length > 0) line(`${kind} ${Date.now()} ${[...partitions].sort((a, b) => a - b).join(',')}`);
  };
  // KafkaJS has no event for a member the coordinator no longer knows; it logs it, after
  // its fetchers stopped and before it joins again.
  const logCreator = () => ({ level, log }) => {
    if (log.message && log.message.startsWith('The coordinator is not aware of this member')) {
      note('L', held);
      held = [];
    }
    // A rebalance answered to a heartbeat is the normal path, not an error.
    const text = `${log.message} ${log.error || ''}`;
    if (level <= logLevel.ERROR && !/rebalancing/.test(text)) console.error(`kafkajs: ${text}`);
  };
  const kafka = new Kafka({ clientId: 'strata-test-group', brokers: bootstrap.split(','), logLevel: logLevel.WARN, logCreator });
  const consumer = kafka.consumer({ groupId, sessionTimeout: 10000, heartbeatInterval: 1000 });
  consumer.on(consumer.events.REBALANCING, () => {
    note('V', held);
    held = [];
  });
  consumer.on(consumer.events.GROUP_JOIN, ({ payload }) => {
    // Eager: the whole new assignment.
    held = payload.memberAssignment[topic] || [];
    note('A', held);
  });
  await consumer.connect();
  await consumer.subscribe({ topic, fromBeginning: true });
  await consumer.run({
    autoCommit: false,
    eachBatch: async ({ batch }) => {
      for (const m of batch.messages) {
        line(`R ${batch.partition} ${m.offset} ${m.key ? m.key.toString() : '-'}`);
      }
      if (batch.messages.length > 0) {
        const next = (BigInt(batch.lastOffset()) + 1n).toString();
        try {
          await consumer.commitOffsets([{ topic, partition: batch.partition, offset: next }]);
        } catch (e) {
          // A commit refused during a rebalance: the records come again (at least once).
          console.error(`commit: ${e.message}`);
        }
      }
    },
  });
  await new Promise((resolve) => process.once('SIGTERM', resolve));
  await consumer.disconnect();
  line(`C ${Date.now()}`);
  fs.closeSync(out);
}

const run = process.argv[2] === 'group' ? () => group(...process.argv.slice(3)) : main;
run().catch((e) => {
  console.error(`FAIL: ${e.stack || e}`);
  process.exit(1);
});
