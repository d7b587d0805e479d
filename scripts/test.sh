#!/usr/bin/env bash
# The one test command. On a machine with only the Rust toolchain it installs what the
# tests need (etcd and kcat from Debian, s3s-fs from crates.io, Python packages from
# PyPI), builds the Java Kafka client test programs (Maven Central), starts
# etcd and s3s-fs on free loopback ports with their own data directories, checks
# formatting and lints, builds, checks the deployment files, runs every test of the
# workspace against them, and stops them at the end.
#
# Set CARGO_TARGET_DIR to reuse a build between clones (.ci/run does).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-test-deps.sh
scripts/build-test-clients.sh
# shellcheck source=scripts/test-env.sh
source scripts/test-env.sh

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo build --workspace --bins --locked
# The Dockerfile, compose file and monitoring files against the binary's own flags.
"$STRATA_TEST_PYTHON" scripts/check_deploy.py "${CARGO_TARGET_DIR:-target}/debug/strata"
log=$(mktemp)
# Tests append their figures here (the fault tests: records acknowledged, lost,
# duplicated; seconds of unavailability); printed after the run, summarized in
# docs/RELIABILITY.md.
STRATA_TEST_REPORT=$(mktemp)
export STRATA_TEST_REPORT
status=0
cargo test --workspace --locked 2>&1 | tee "$log" || status=$?
cat "$STRATA_TEST_REPORT"
rm -f "$STRATA_TEST_REPORT"
# One closing line for the whole run: the sum of every test binary's result.
awk '/^test result:/ { passed += $4; failed += $6 }
     END { printf "tests: %d passed, %d failed\n", passed, failed }' "$log"
rm -f "$log"
exit "$status"
