#!/usr/bin/env bash
# Builds the Kafka client test programs the Kafka listener's tests run: Kafka's own Java
# client and Kafka Streams (tests/java, with Maven; its repository is cached in
# ~/.cache/strata/m2), Kafka Connect (tests/connect) and KafkaJS (tests/node, with npm). Idempotent: only what changed is built again.
set -euo pipefail
cd "$(dirname "$0")/.."
m2="${STRATA_M2:-$HOME/.cache/strata/m2}"
mvn -q -B -Dmaven.repo.local="$m2" -f tests/java/pom.xml \
  package dependency:copy-dependencies -DoutputDirectory=target/lib
# Kafka Connect's runtime and its FileStream connectors (nothing to build: the jars).
mvn -q -B -Dmaven.repo.local="$m2" -f tests/connect/pom.xml \
  dependency:copy-dependencies -DoutputDirectory=target/lib
# KafkaJS and its snappy and lz4 codecs, and playwright-core (drives Debian's Chromium in
# the console tests) (npm; its cache in ~/.cache/strata/npm), as
# tests/node/package-lock.json pins them.
if [ ! -d tests/node/node_modules ] || [ tests/node/package-lock.json -nt tests/node/node_modules ]; then
  (cd tests/node && npm ci --no-audit --no-fund --cache "${STRATA_NPM_CACHE:-$HOME/.cache/strata/npm}" >/dev/null)
fi
