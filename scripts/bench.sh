#!/usr/bin/env bash
# The standard benchmark suite. Builds release, starts etcd + s3s-fs + one agent on
# loopback, runs the suite, stops everything, and writes docs/BENCHMARKS.md with the
# machine, the commit, the exact commands and every figure with its target.
#
#   scripts/bench.sh                 # 60 s per run, as the table in docs/BENCHMARKS.md
#   BENCH_SECONDS=10 scripts/bench.sh  # a quicker look
#   BENCH_PROFILE="a kafka-strata-produce" scripts/bench.sh  # and perf profiles of those runs
#
# Suite: (a) 1 KiB records, 16 partitions, 4 producers, acks=ALL (idempotent, the SDK's
# default); (p) the same without idempotence, to show what it costs; (t) the same,
# transactional, each producer committing every 100 ms; (b) (a) with 1,000
# partitions; (c) 100-byte records; (d) catch-up consume of (a) from the object store
# (agent restarted: cold cache); (e) e2e (tail consume) at 50% of (a)'s rate; (x) (a) with
# 10,000 partitions; (l) the low-latency profile (agent --linger-ms 5), e2e at 1 MB/s; and
# the baseline: PUTs and GETs of the same sizes straight through object_store. Every run
# also records the agent's and the load generator's CPU seconds.
# Kafka suite: Kafka's own perf tools (kafka-producer-perf-test and
# kafka-consumer-perf-test, from kafka-tools, the consumer in a consumer group), 1 KiB
# records, 16 partitions, acks=all, against Strata's Kafka listener and against an Apache Kafka 4
# broker (one KRaft node, local disk) started here; (k) is (a) with one producer, the
# gRPC figure the Kafka path is compared with. BENCH_KAFKA_RECORDS sets the records.
set -euo pipefail
cd "$(dirname "$0")/.."

SECONDS_PER_RUN=${BENCH_SECONDS:-60}
OUT=${BENCH_OUT:-docs/BENCHMARKS.md}

scripts/install-test-deps.sh
cargo build --release --locked --bin strata
BIN="${CARGO_TARGET_DIR:-target}/release/strata"

# shellcheck source=scripts/test-env.sh
source scripts/test-env.sh
RESULTS="$STRATA_TEST_ROOT/results"
mkdir -p "$RESULTS"

AGENT_PORT=$(strata_free_port)
METRICS_PORT=$(strata_free_port)
KAFKA_PORT=$(strata_free_port)
export STRATA_SERVER="http://127.0.0.1:$AGENT_PORT"
S3_ARGS=(--s3-endpoint "$STRATA_TEST_S3_ENDPOINT" --s3-access-key "$STRATA_TEST_S3_ACCESS_KEY"
  --s3-secret-key "$STRATA_TEST_S3_SECRET_KEY" --s3-allow-http --create-bucket)
AGENT_CMD=("$BIN" agent --metastore "etcd://$STRATA_TEST_ETCD" --object-store s3://bench/segments
  "${S3_ARGS[@]}" --cluster bench --agent-id bench-agent
  --listen "127.0.0.1:$AGENT_PORT" --metrics-listen "127.0.0.1:$METRICS_PORT"
  --kafka-listen "127.0.0.1:$KAFKA_PORT")
PEAK_RSS_KB=0

start_agent() {
  "${AGENT_CMD[@]}" >>"$STRATA_TEST_ROOT/agent.log" 2>&1 &
  AGENT_PID=$!
  strata_wait_port agent "$AGENT_PORT" "$AGENT_PID" "$STRATA_TEST_ROOT/agent.log"
}
stop_agent() {
  local rss
  rss=$(awk '/VmHWM/ {print $2}' "/proc/$AGENT_PID/status" 2>/dev/null || echo 0)
  [ "${rss:-0}" -gt "$PEAK_RSS_KB" ] && PEAK_RSS_KB=$rss
  kill -TERM "$AGENT_PID" 2>/dev/null || true
  wait "$AGENT_PID" 2>/dev/null || true
}
metrics() { # the agent's /metrics now, saved as RESULTS/NAME.metrics
  (exec 3<>"/dev/tcp/127.0.0.1/$METRICS_PORT"; printf 'GET /metrics HTTP/1.0\r\n\r\n' >&3; cat <&3) >"$RESULTS/$1.metrics"
}
# BENCH_PROFILE="a k kafka-strata-produce": those runs are also sampled with perf (499 Hz,
# the server process); RESULTS/NAME.profile.txt lists its hottest symbols.
profile_begin() {
  case " ${BENCH_PROFILE:-} " in *" $1 "*) ;; *) return 0 ;; esac
  perf record -F 499 -o "$RESULTS/$1.perf.data" -p "${SERVER_PID:-$AGENT_PID}" >/dev/null 2>&1 &
  PERF_PID=$!
}
profile_end() {
  [ -n "${PERF_PID:-}" ] || return 0
  kill -INT "$PERF_PID" 2>/dev/null || true
  wait "$PERF_PID" 2>/dev/null || true
  PERF_PID=
  perf report -i "$RESULTS/$1.perf.data" --no-children --stdio --sort symbol \
    --percent-limit 0.5 2>/dev/null | grep -v '^#' | grep -v '^$' >"$RESULTS/$1.profile.txt" || true
  rm -f "$RESULTS/$1.perf.data"
}
# One measured stretch: CPU seconds of every process (cpu_begin/cpu_end) and, if
# BENCH_PROFILE names it, a perf profile of the server.
measure_begin() { # name
  cpu_begin
  profile_begin "$1"
}
measure_end() { # name
  profile_end "$1"
  cpu_end "$1"
}
run() { # name, command...
  local name=$1
  shift
  echo "== $name: strata $*" >&2
  echo "strata $*" >"$RESULTS/$name.cmd"
  measure_begin "$name"
  "$BIN" "$@" --json --quiet | tee "$RESULTS/$name.out" >&2
  measure_end "$name"
  tail -n 1 "$RESULTS/$name.out" >"$RESULTS/$name.json"
}
json() { python3 -c "import json,sys; print(json.load(open('$RESULTS/$1.json'))['$2'])"; }
# CPU accounting: the CPU seconds (user + system, /proc/PID/stat) of the server (the agent,
# or the Apache Kafka broker with SERVER_PID), of etcd and of the S3 server, and this
# shell's waited-for children's (bash's `times`: the load generator, JVMs included).
pid_cpu() { # pid
  if [ -r "/proc/$1/stat" ]; then
    awk -v hz="$(getconf CLK_TCK)" '{printf "%.2f\n", ($14 + $15) / hz}' "/proc/$1/stat"
  else
    echo 0
  fi
}
children_cpu() { # the seconds in a `times` output file's second line
  tail -n 1 "$1" | awk '{t = 0; for (i = 1; i <= 2; i++) { split($i, a, "m"); t += a[1] * 60 + a[2] }; printf "%.2f\n", t}'
}
cpu_begin() {
  CPU0=("$(pid_cpu "${SERVER_PID:-$AGENT_PID}")" "$(pid_cpu "$STRATA_TEST_ETCD_PID")" "$(pid_cpu "$STRATA_TEST_S3_PID")")
  times >"$RESULTS/.times0"
}
cpu_end() { # name: writes RESULTS/NAME.cpu.json
  times >"$RESULTS/.times1"
  local server etcd s3 gen
  server=$(python3 -c "print(round($(pid_cpu "${SERVER_PID:-$AGENT_PID}") - ${CPU0[0]}, 2))")
  etcd=$(python3 -c "print(round($(pid_cpu "$STRATA_TEST_ETCD_PID") - ${CPU0[1]}, 2))")
  s3=$(python3 -c "print(round($(pid_cpu "$STRATA_TEST_S3_PID") - ${CPU0[2]}, 2))")
  gen=$(python3 -c "print(round($(children_cpu "$RESULTS/.times1") - $(children_cpu "$RESULTS/.times0"), 2))")
  echo "{\"agent_cpu_s\": $server, \"loadgen_cpu_s\": $gen, \"etcd_cpu_s\": $etcd, \"s3_cpu_s\": $s3}" >"$RESULTS/$1.cpu.json"
}

start_agent
run a bench produce --topic bench-a --partitions 16 --record-size 1024 --producers 4 --acks all --duration "$SECONDS_PER_RUN"
metrics a
run p bench produce --topic bench-p --partitions 16 --record-size 1024 --producers 4 --acks all --no-idempotence --duration "$SECONDS_PER_RUN"
run t bench produce --topic bench-t --partitions 16 --record-size 1024 --producers 4 --acks all --transactional-id bench --commit-interval-ms 100 --duration "$SECONDS_PER_RUN"
run b bench produce --topic bench-b --partitions 1000 --record-size 1024 --producers 4 --acks all --duration "$SECONDS_PER_RUN"
# Each later agent start would take these partitions again, in the background of the run
# it measures: the wide topics go once measured.
"$BIN" topic delete bench-b >&2
run c bench produce --topic bench-c --partitions 16 --record-size 100 --producers 4 --acks all --duration "$SECONDS_PER_RUN"
HALF_RATE=$(python3 -c "print(int($(json a records_per_sec) / 2))")
run e bench e2e --topic bench-e --partitions 16 --record-size 1024 --producers 4 --rate "$HALF_RATE" --duration "$SECONDS_PER_RUN"
metrics x0
run x bench produce --topic bench-x --partitions 10000 --record-size 1024 --producers 4 --acks all --duration "$SECONDS_PER_RUN"
metrics x
"$BIN" topic delete bench-x >&2
stop_agent
start_agent   # a cold cache: the catch-up reads come from the object store
run d bench consume --topic bench-a
for topic in bench-a bench-p bench-t bench-c bench-e; do "$BIN" topic delete "$topic" >&2; done
stop_agent
# The low-latency profile: the agent flushes 5 ms after a segment's first record.
DEFAULT_AGENT_CMD=("${AGENT_CMD[@]}")
AGENT_CMD+=(--linger-ms 5)
start_agent
run l bench e2e --topic bench-l --partitions 16 --record-size 1024 --producers 4 --rate 1000 --duration "$SECONDS_PER_RUN"
metrics l
stop_agent
AGENT_CMD=("${DEFAULT_AGENT_CMD[@]}")

# The Kafka suite.
scripts/build-test-clients.sh
mvn -q -B -Dmaven.repo.local="${STRATA_M2:-$HOME/.cache/strata/m2}" -f scripts/kafka-bench/pom.xml \
  dependency:copy-dependencies -DoutputDirectory=target/lib
KAFKA_CP="scripts/kafka-bench/target/lib/*"
CLIENTS_CP="tests/java/target/classes:tests/java/target/lib/*"
KAFKA_RECORDS=${BENCH_KAFKA_RECORDS:-$((SECONDS_PER_RUN * 25000))}
PRODUCER_PROPS=(acks=all linger.ms=20 batch.size=1048576 max.request.size=67108864 buffer.memory=268435456)
kafka_suite() { # name bootstrap
  local name=$1 bootstrap=$2
  echo "== kafka suite against $name ($bootstrap): $KAFKA_RECORDS records" >&2
  java -cp "$KAFKA_CP" org.apache.kafka.tools.TopicCommand --bootstrap-server "$bootstrap" \
    --create --topic "perf-$name" --partitions 16 --replication-factor 1 >&2
  echo "kafka-producer-perf-test --topic perf-$name --num-records $KAFKA_RECORDS --record-size 1024 --throughput -1 --producer-props bootstrap.servers=$bootstrap ${PRODUCER_PROPS[*]}" \
    >"$RESULTS/kafka-$name-produce.cmd"
  measure_begin "kafka-$name-produce"
  java -Xmx2g -cp "$KAFKA_CP" org.apache.kafka.tools.ProducerPerformance --topic "perf-$name" \
    --num-records "$KAFKA_RECORDS" --record-size 1024 --throughput -1 \
    --producer-props "bootstrap.servers=$bootstrap" "${PRODUCER_PROPS[@]}" 2>/dev/null \
    | tee "$RESULTS/kafka-$name-produce.log" >&2
  measure_end "kafka-$name-produce"
  tail -n 1 "$RESULTS/kafka-$name-produce.log" >"$RESULTS/kafka-$name-produce.out"
  echo "kafka-consumer-perf-test --bootstrap-server $bootstrap --topic perf-$name --messages $KAFKA_RECORDS --group perf-$name --timeout 120000" \
    >"$RESULTS/kafka-$name-consume.cmd"
  measure_begin "kafka-$name-consume"
  java -Xmx2g -cp "$KAFKA_CP" org.apache.kafka.tools.ConsumerPerformance --bootstrap-server "$bootstrap" \
    --topic "perf-$name" --messages "$KAFKA_RECORDS" --group "perf-$name" --timeout 120000 2>/dev/null \
    | tee "$RESULTS/kafka-$name-consume.log" >&2
  measure_end "kafka-$name-consume"
  tail -n 1 "$RESULTS/kafka-$name-consume.log" >"$RESULTS/kafka-$name-consume.out"
}

start_agent
run k bench produce --topic bench-k --partitions 16 --record-size 1024 --producers 1 --acks all --duration "$SECONDS_PER_RUN"
kafka_suite strata "127.0.0.1:$KAFKA_PORT"
stop_agent

# Apache Kafka: one KRaft node (broker and controller), its log on local disk.
APACHE_PORT=$(strata_free_port)
APACHE_CONTROLLER_PORT=$(strata_free_port)
mkdir -p "$STRATA_TEST_ROOT/kafka"
cat >"$STRATA_TEST_ROOT/kafka/server.properties" <<PROPS
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$APACHE_CONTROLLER_PORT
listeners=PLAINTEXT://127.0.0.1:$APACHE_PORT,CONTROLLER://127.0.0.1:$APACHE_CONTROLLER_PORT
advertised.listeners=PLAINTEXT://127.0.0.1:$APACHE_PORT
controller.listener.names=CONTROLLER
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs=$STRATA_TEST_ROOT/kafka/data
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
PROPS
java -cp "$KAFKA_CP" kafka.tools.StorageTool format -t "$(java -cp "$KAFKA_CP" kafka.tools.StorageTool random-uuid)" \
  -c "$STRATA_TEST_ROOT/kafka/server.properties" >&2
java -Xmx2g -cp "$KAFKA_CP" kafka.Kafka "$STRATA_TEST_ROOT/kafka/server.properties" \
  >"$STRATA_TEST_ROOT/kafka/broker.log" 2>&1 &
APACHE_PID=$!
strata_wait_port kafka "$APACHE_PORT" "$APACHE_PID" "$STRATA_TEST_ROOT/kafka/broker.log"
SERVER_PID=$APACHE_PID kafka_suite kafka "127.0.0.1:$APACHE_PORT"
kill -TERM "$APACHE_PID" 2>/dev/null || true
wait "$APACHE_PID" 2>/dev/null || true

PUT_SIZE=$(python3 -c "a=__import__('json').load(open('$RESULTS/a.json')); print(max(1, a['put_bytes'] // max(1, a['puts'])))")
GET_SIZE=$(python3 -c "d=__import__('json').load(open('$RESULTS/d.json')); print(max(1, d['get_bytes'] // max(1, d['gets'])))")
run baseline bench object-store --object-store s3://bench-baseline/objects "${S3_ARGS[@]}" \
  --object-size "$PUT_SIZE" --get-size "$GET_SIZE" --put-concurrency 4 --get-concurrency 16 --duration 20

# The raw results outlive the test environment: the report can be written again from them
# (python3 scripts/bench_report.py target/bench-results "$(cat target/bench-results/peak_rss_kb)" SECONDS).
echo "$PEAK_RSS_KB" >"$RESULTS/peak_rss_kb"
KEPT="${CARGO_TARGET_DIR:-target}/bench-results"
rm -rf "$KEPT" && cp -r "$RESULTS" "$KEPT"
python3 scripts/bench_report.py "$KEPT" "$PEAK_RSS_KB" "$SECONDS_PER_RUN" >"$OUT"
echo "wrote $OUT" >&2
