#!/usr/bin/env bash
# franz-go's own pkg/kgo tests (a Kafka client's test suite we did not write) against
# `strata dev`'s Kafka listener. Fetches franz-go from the Go module proxy (cached under
# ~/.cache/strata/go), starts `strata dev` on free ports, runs `go test` with the tests
# listed in scripts/kgo-excluded.txt skipped, and prints one line:
#   kgo suite: N passed, M failed, K excluded
# then the failed tests' names. Exits non-zero if any test failed.
#
#   scripts/kgo-compat.sh STRATA_BINARY [GO_TEST_RUN_REGEX]
#
# KGO_TEST_RECORDS (default 20000) bounds the records of the suite's big tests.
set -euo pipefail
cd "$(dirname "$0")/.."
strata=$(realpath "$1")
run=${2:-.}
version=v1.22.3
cache="${STRATA_GO_CACHE:-$HOME/.cache/strata/go}"
export GOPATH="$cache" GOMODCACHE="$cache/mod" GOCACHE="$cache/build" GOFLAGS=-modcacherw
export GOTOOLCHAIN=local GOPROXY="${GOPROXY:-https://proxy.golang.org,direct}"
work=$(mktemp -d)
# KGO_KEEP_WORK=DIR keeps the run (strata dev's data and log, go test's output) in DIR.
trap 'kill "${dev_pid:-}" 2>/dev/null || true; wait "${dev_pid:-}" 2>/dev/null || true; if [ -n "${KGO_KEEP_WORK:-}" ]; then rm -rf "$KGO_KEEP_WORK"; mv "$work" "$KGO_KEEP_WORK"; else rm -rf "$work"; fi' EXIT

(cd "$work" && go mod download github.com/twmb/franz-go@"$version")
src="$GOMODCACHE/github.com/twmb/franz-go@$version"
cp -r "$src" "$work/franz-go"
chmod -R u+w "$work/franz-go"

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
kafka_port=$(port)
"$strata" dev --data-dir "$work/data" --listen "127.0.0.1:$(port)" --metrics-listen "127.0.0.1:$(port)" \
  --kafka-listen "127.0.0.1:$kafka_port" >"$work/dev.log" 2>&1 &
dev_pid=$!
for _ in $(seq 1 100); do
  (exec 3<>"/dev/tcp/127.0.0.1/$kafka_port") 2>/dev/null && break
  sleep 0.2
done

# Skipped tests: one name per line, then " # " and the reason (docs/KAFKA_COMPATIBILITY.md
# lists them with the Kafka behaviour each needs).
skip=$(grep -v '^#' scripts/kgo-excluded.txt | sed 's/ *#.*//' | grep -v '^$' | paste -sd'|' - || true)
excluded=$(grep -v '^#' scripts/kgo-excluded.txt | sed 's/ *#.*//' | grep -vc '^$' || true)

cd "$work/franz-go/pkg/kgo"
status=0
KGO_SEEDS="127.0.0.1:$kafka_port" KGO_TEST_RF=1 KGO_TEST_RECORDS="${KGO_TEST_RECORDS:-20000}" \
  KGO_LOG_LEVEL=none go test -count=1 -json -timeout 30m -run "$run" ${skip:+-skip "^($skip)\$"} . \
  >"$work/test.json" 2>"$work/test.err" || status=$?
python3 - "$work/test.json" "$excluded" <<'PY'
import json, sys
results = {}
started = []
output = []
for line in open(sys.argv[1]):
    try:
        event = json.loads(line)
    except ValueError:
        continue
    test = event.get("Test")
    if event.get("Action") == "output":
        output.append(event.get("Output", ""))
        del output[:-40]
    if test and "/" not in test and event.get("Action") == "run":
        started.append(test)
    if test and "/" not in test and event.get("Action") in ("pass", "fail", "skip"):
        results[test] = event["Action"]
passed = sorted(t for t, a in results.items() if a == "pass")
failed = sorted(t for t, a in results.items() if a == "fail")
skipped = sorted(t for t, a in results.items() if a == "skip")
print(f"kgo suite: {len(passed)} passed, {len(failed)} failed, {sys.argv[2]} excluded "
      f"({len(skipped)} skipped by the suite itself: no SCRAM, OAuth or TLS settings given)")
for t in failed:
    print(f"  failed: {t}")
# A test that panics ends the run without a result: name it, with the run's last output.
unfinished = [t for t in started if t not in results]
for t in unfinished:
    print(f"  never finished (the run stopped in it): {t}")
if unfinished or failed:
    print("last output of the run:")
    print("".join(output), end="")
PY
if [ "$status" -ne 0 ]; then
  tail -n 20 "$work/test.err" >&2 || true
fi
exit "$status"
