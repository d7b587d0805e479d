#!/usr/bin/env bash
# Sourced by scripts/test.sh: starts one etcd and one s3s-fs on free loopback ports, each
# with its own data directory under a temporary root, waits until both answer, exports
# where they are, and stops them (and removes the root) when the calling shell exits.
#
# Exports:
#   STRATA_TEST_ETCD            host:port of etcd's client endpoint
#   STRATA_TEST_S3_ENDPOINT     http://host:port of the S3 server
#   STRATA_TEST_S3_ACCESS_KEY, STRATA_TEST_S3_SECRET_KEY
#   STRATA_TEST_S3_DIR          the directory s3s-fs serves (a bucket is a subdirectory)
#   STRATA_TEST_PYTHON          a Python with pyarrow and duckdb (install-test-deps.sh)
#   STRATA_CHECKOV              the checkov executable (install-test-deps.sh)

STRATA_PORTS_TAKEN=" "
strata_free_port() { # a port nothing listens on and this shell has not handed out yet
  local port
  while :; do
    port=$((20000 + RANDOM % 40000))
    case "$STRATA_PORTS_TAKEN" in *" $port "*) continue ;; esac
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      STRATA_PORTS_TAKEN="$STRATA_PORTS_TAKEN$port "
      echo "$port"
      return
    fi
  done
}

strata_wait_port() { # name port pid log
  local i
  for i in $(seq 1 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$2") 2>/dev/null; then return 0; fi
    if ! kill -0 "$3" 2>/dev/null; then
      echo "$1 exited during start-up; its log:" >&2; cat "$4" >&2; return 1
    fi
    sleep 0.1
  done
  echo "$1 did not listen on port $2 within 10 s; its log:" >&2; cat "$4" >&2; return 1
}

strata_stop_test_env() {
  [ -n "${STRATA_TEST_ETCD_PID:-}" ] && kill "$STRATA_TEST_ETCD_PID" 2>/dev/null
  [ -n "${STRATA_TEST_S3_PID:-}" ] && kill "$STRATA_TEST_S3_PID" 2>/dev/null
  wait 2>/dev/null
  [ -n "${STRATA_TEST_ROOT:-}" ] && rm -rf "$STRATA_TEST_ROOT"
  return 0
}

STRATA_TEST_ROOT=$(mktemp -d "${TMPDIR:-/tmp}/strata-test-env.XXXXXX")
trap strata_stop_test_env EXIT

# A port can be taken between the check and the bind; each server gets three tries.
for attempt in 1 2 3; do
  etcd_port=$(strata_free_port)
  etcd_peer_port=$(strata_free_port)
  rm -rf "$STRATA_TEST_ROOT/etcd"
  etcd --name strata-test --data-dir "$STRATA_TEST_ROOT/etcd" \
    --listen-client-urls "http://127.0.0.1:$etcd_port" \
    --advertise-client-urls "http://127.0.0.1:$etcd_port" \
    --listen-peer-urls "http://127.0.0.1:$etcd_peer_port" \
    --initial-advertise-peer-urls "http://127.0.0.1:$etcd_peer_port" \
    --initial-cluster "strata-test=http://127.0.0.1:$etcd_peer_port" \
    >"$STRATA_TEST_ROOT/etcd.log" 2>&1 &
  STRATA_TEST_ETCD_PID=$!
  if strata_wait_port etcd "$etcd_port" "$STRATA_TEST_ETCD_PID" "$STRATA_TEST_ROOT/etcd.log"; then
    break
  fi
  if [ "$attempt" = 3 ]; then echo "could not start etcd" >&2; return 1; fi
done

mkdir -p "$STRATA_TEST_ROOT/s3"
for attempt in 1 2 3; do
  s3_port=$(strata_free_port)
  s3s-fs --host 127.0.0.1 --port "$s3_port" --access-key strata-test --secret-key strata-test-secret \
    "$STRATA_TEST_ROOT/s3" >"$STRATA_TEST_ROOT/s3s-fs.log" 2>&1 &
  STRATA_TEST_S3_PID=$!
  if strata_wait_port s3s-fs "$s3_port" "$STRATA_TEST_S3_PID" "$STRATA_TEST_ROOT/s3s-fs.log"; then
    break
  fi
  if [ "$attempt" = 3 ]; then echo "could not start s3s-fs" >&2; return 1; fi
done

export STRATA_TEST_ETCD="127.0.0.1:$etcd_port"
export STRATA_TEST_S3_ENDPOINT="http://127.0.0.1:$s3_port"
export STRATA_TEST_S3_ACCESS_KEY=strata-test
export STRATA_TEST_S3_SECRET_KEY=strata-test-secret
export STRATA_TEST_S3_DIR="$STRATA_TEST_ROOT/s3"
export STRATA_TEST_PYTHON="${STRATA_TEST_VENV:-$HOME/.cache/strata/test-venv}/bin/python"
export STRATA_CHECKOV="${STRATA_CHECKOV_VENV:-$HOME/.cache/strata/checkov-venv}/bin/checkov"
echo "test environment: etcd $STRATA_TEST_ETCD, s3s-fs $STRATA_TEST_S3_ENDPOINT ($STRATA_TEST_ROOT)" >&2
