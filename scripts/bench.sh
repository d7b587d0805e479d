#!/usr/bin/env bash
# The standard benchmark suite. Builds release, starts etcd + s3s-fs + one agent on
# loopback, runs the suite, stops everything, and writes docs/BENCHMARKS.md with the
# machine, the commit, the exact commands and every figure with its target.
#
#   scripts/bench.sh                 # 60 s per run, as the table in docs/BENCHMARKS.md
#   BENCH_SECONDS=10 scripts/bench.sh  # a quicker look
#
# Suite: (a) 1 KiB records, 16 partitions, 4 producers, acks=ALL (idempotent, the SDK's
# default); (p) the same without idempotence, to show what it costs; (t) the same,
# transactional, each producer committing every 100 ms; (b) (a) with 1,000
# partitions; (c) 100-byte records; (d) catch-up consume of (a) from the object store
# (agent restarted: cold cache); (e) e2e (tail consume) at 50% of (a)'s rate; and the
# baseline: PUTs and GETs of the same sizes straight through object_store.
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
run() { # name, command...
  local name=$1
  shift
  echo "== $name: strata $*" >&2
  echo "strata $*" >"$RESULTS/$name.cmd"
  "$BIN" "$@" --json --quiet | tee "$RESULTS/$name.out" >&2
  tail -n 1 "$RESULTS/$name.out" >"$RESULTS/$name.json"
}
json() { python3 -c "import json,sys; print(json.load(open('$RESULTS/$1.json'))['$2'])"; }

start_agent
run a bench produce --topic bench-a --partitions 16 --record-size 1024 --producers 4 --acks all --duration "$SECONDS_PER_RUN"
metrics a
run p bench produce --topic bench-p --partitions 16 --record-size 1024 --producers 4 --acks all --no-idempotence --duration "$SECONDS_PER_RUN"
run t bench produce --topic bench-t --partitions 16 --record-size 1024 --producers 4 --acks all --transactional-id bench --commit-interval-ms 100 --duration "$SECONDS_PER_RUN"
run b bench produce --topic bench-b --partitions 1000 --record-size 1024 --producers 4 --acks all --duration "$SECONDS_PER_RUN"
run c bench produce --topic bench-c --partitions 16 --record-size 100 --producers 4 --acks all --duration "$SECONDS_PER_RUN"
HALF_RATE=$(python3 -c "print(int($(json a records_per_sec) / 2))")
run e bench e2e --topic bench-e --partitions 16 --record-size 1024 --producers 4 --rate "$HALF_RATE" --duration "$SECONDS_PER_RUN"
stop_agent
start_agent   # a cold cache: the catch-up reads come from the object store
run d bench consume --topic bench-a
stop_agent

PUT_SIZE=$(python3 -c "a=__import__('json').load(open('$RESULTS/a.json')); print(max(1, a['put_bytes'] // max(1, a['puts'])))")
GET_SIZE=$(python3 -c "d=__import__('json').load(open('$RESULTS/d.json')); print(max(1, d['get_bytes'] // max(1, d['gets'])))")
run baseline bench object-store --object-store s3://bench-baseline/objects "${S3_ARGS[@]}" \
  --object-size "$PUT_SIZE" --get-size "$GET_SIZE" --put-concurrency 4 --get-concurrency 16 --duration 20

python3 scripts/bench_report.py "$RESULTS" "$PEAK_RSS_KB" "$SECONDS_PER_RUN" >"$OUT"
echo "wrote $OUT" >&2
