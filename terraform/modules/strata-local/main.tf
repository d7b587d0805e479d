# A local Strata cluster with the docker provider: etcd, MinIO, N agents and a compactor —
# the same stack as deploy/docker-compose.yml and the integration tests (which start etcd
# and an S3 server on 127.0.0.1). Host networking, as there: an agent advertises the
# address clients reach it on, the same inside and outside the containers.

locals {
  strata_environment = merge(
    {
      STRATA_METASTORE        = "etcd://127.0.0.1:2379"
      STRATA_CLUSTER          = var.cluster
      STRATA_ETCD_MAX_TXN_OPS = tostring(var.etcd_max_txn_ops)
      STRATA_OBJECT_STORE     = "s3://${var.bucket}/cluster"
      STRATA_S3_ENDPOINT      = "http://127.0.0.1:9000"
      STRATA_S3_ALLOW_HTTP    = "true"
      STRATA_CREATE_BUCKET    = "true"
      STRATA_S3_ACCESS_KEY    = var.minio_root_user
      STRATA_S3_SECRET_KEY    = var.minio_root_password
    },
    length(var.auth_tokens) > 0 ? { STRATA_AUTH_TOKENS = join(",", var.auth_tokens) } : {},
  )
  strata_env = [for key, value in local.strata_environment : "${key}=${value}"]
  agents     = { for i in range(1, var.agent_count + 1) : "agent-${i}" => i }
}

resource "docker_image" "strata" {
  name         = var.strata_image
  keep_locally = true

  dynamic "build" {
    for_each = var.build_context == null ? [] : [var.build_context]
    content {
      context    = build.value
      dockerfile = "Dockerfile"
    }
  }
}

resource "docker_image" "etcd" {
  name         = var.etcd_image
  keep_locally = true
}

resource "docker_image" "minio" {
  name         = var.minio_image
  keep_locally = true
}

resource "docker_volume" "etcd_data" {
  name = "strata-${var.cluster}-etcd-data"
}

resource "docker_volume" "minio_data" {
  name = "strata-${var.cluster}-minio-data"
}

resource "docker_volume" "agent_cache" {
  for_each = local.agents
  name     = "strata-${var.cluster}-${each.key}-cache"
}

resource "docker_container" "etcd" {
  name         = "strata-${var.cluster}-etcd"
  image        = docker_image.etcd.image_id
  network_mode = "host"
  restart      = "unless-stopped"
  command = [
    "etcd",
    "--name=strata-local",
    "--data-dir=/etcd-data",
    "--listen-client-urls=http://127.0.0.1:2379",
    "--advertise-client-urls=http://127.0.0.1:2379",
    "--listen-peer-urls=http://127.0.0.1:2380",
    "--initial-advertise-peer-urls=http://127.0.0.1:2380",
    "--initial-cluster=strata-local=http://127.0.0.1:2380",
    # Strata's flush commits are one transaction of up to max-txn-ops operations.
    "--max-txn-ops=${var.etcd_max_txn_ops}",
    "--quota-backend-bytes=8589934592",
    # Strata's compactor compacts etcd's history; this is a backstop.
    "--auto-compaction-mode=periodic",
    "--auto-compaction-retention=1h",
  ]

  volumes {
    volume_name    = docker_volume.etcd_data.name
    container_path = "/etcd-data"
  }

  healthcheck {
    test     = ["CMD", "etcdctl", "--endpoints=http://127.0.0.1:2379", "endpoint", "health"]
    interval = "5s"
    timeout  = "3s"
    retries  = 20
  }

  # Agents start once etcd is healthy.
  wait         = true
  wait_timeout = 120
}

resource "docker_container" "minio" {
  name         = "strata-${var.cluster}-minio"
  image        = docker_image.minio.image_id
  network_mode = "host"
  restart      = "unless-stopped"
  command      = ["server", "/data", "--address", "127.0.0.1:9000", "--console-address", "127.0.0.1:9001"]
  env = [
    "MINIO_ROOT_USER=${var.minio_root_user}",
    "MINIO_ROOT_PASSWORD=${var.minio_root_password}",
  ]

  volumes {
    volume_name    = docker_volume.minio_data.name
    container_path = "/data"
  }

  healthcheck {
    test     = ["CMD", "mc", "ready", "local"]
    interval = "5s"
    timeout  = "3s"
    retries  = 20
  }

  wait         = true
  wait_timeout = 120
}

resource "docker_container" "agent" {
  for_each     = local.agents
  name         = "strata-${var.cluster}-${each.key}"
  image        = docker_image.strata.image_id
  network_mode = "host"
  restart      = "unless-stopped"
  env          = local.strata_env
  command = [
    "agent",
    "--agent-id", each.key,
    "--listen", "127.0.0.1:${7070 + each.value}",
    "--metrics-listen", "127.0.0.1:${9090 + each.value}",
    "--cache-dir", "/var/lib/strata/cache",
  ]
  # SIGTERM hands the agent's partitions off before it exits.
  stop_timeout = 30

  volumes {
    volume_name    = docker_volume.agent_cache[each.key].name
    container_path = "/var/lib/strata/cache"
  }

  healthcheck {
    test     = ["CMD", "strata", "--server", "http://127.0.0.1:${7070 + each.value}", "health"]
    interval = "5s"
    timeout  = "3s"
    retries  = 20
  }

  depends_on = [docker_container.etcd, docker_container.minio]
}

resource "docker_container" "compactor" {
  name         = "strata-${var.cluster}-compactor"
  image        = docker_image.strata.image_id
  network_mode = "host"
  restart      = "unless-stopped"
  env          = local.strata_env
  command      = ["compactor", "--compactor-id", "compactor-1"]

  # No listener to probe: the container is healthy while the process runs.
  healthcheck {
    test = ["NONE"]
  }

  depends_on = [docker_container.etcd, docker_container.minio]
}
