#!/usr/bin/env bash
# Installs what the integration tests need and a fresh machine lacks:
#   etcd (Debian's etcd-server) and s3s-fs (a real S3 server over a directory, from crates.io).
# Idempotent: installs only what is missing.
set -euo pipefail

if ! command -v etcd >/dev/null 2>&1; then
  echo "installing etcd (Debian etcd-server)" >&2
  sudo_cmd=""
  [ "$(id -u)" = 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq etcd-server etcd-client >/dev/null
fi

if ! command -v s3s-fs >/dev/null 2>&1; then
  echo "installing s3s-fs 0.14.1 (cargo install; about 2-5 minutes)" >&2
  # 0.14.1 is the newest that builds on our toolchain.
  cargo install s3s-fs@0.14.1 --features binary --locked --quiet
fi
