# syntax=docker/dockerfile:1
# The `strata` binary (agent, compactor, dev server and CLI) in a small runtime image.
#   docker build -t strata .
#   docker run --rm -p 7070:7070 strata dev --data-dir /data --listen 0.0.0.0:7070
# Nothing else is needed at build time: our protos and etcd-client's are compiled with
# protox / a vendored protoc, so the build stage needs no protoc.

FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin strata \
 && cp target/release/strata /usr/local/bin/strata

FROM debian:bookworm-slim AS runtime
# CA certificates for S3 and etcd over TLS; nothing else. Not pinned: Debian replaces a
# package version with its security updates, and a pin would break the build.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 strata \
 && useradd --system --uid 10001 --gid strata --home-dir /var/lib/strata --create-home strata \
 && install -d -o strata -g strata /var/lib/strata/cache /var/lib/strata/data
COPY --from=build /usr/local/bin/strata /usr/local/bin/strata
USER 10001:10001
WORKDIR /var/lib/strata
# gRPC and Prometheus metrics.
EXPOSE 7070 9090 9092
# The agent's standard gRPC health service, which needs no token (with TLS, override it:
# strata --server https://localhost:7070 --tls-ca CA health). Compose and orchestrators
# disable it for the compactor, which has no listener.
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
  CMD ["strata", "--server", "http://127.0.0.1:7070", "health"]
ENTRYPOINT ["strata"]
CMD ["--help"]
