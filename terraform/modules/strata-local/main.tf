# A local Strata cluster with the docker provider: etcd, MinIO, N agents and a compactor —
# the same stack as deploy/docker-compose.yml and the integration tests (which start etcd
# and an S3 server on 127.0.0.1). Host networking, as there: an agent advertises the
# address clients reach it on, the same inside and outside the containers. With `secure`
# (the default) the agents serve TLS and require a token, as the AWS module's do.

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
  )
  strata_env = [for key, value in local.strata_environment : "${key}=${value}"]
  agents     = { for i in range(1, var.agent_count + 1) : "agent-${i}" => i }
  scheme     = var.secure ? "https" : "http"

  # What secure agents get: files uploaded into their containers, and the settings naming
  # them.
  tokens = var.secure ? (length(var.auth_tokens) > 0 ? var.auth_tokens : [random_password.token[0].result]) : []
  security_files = var.secure ? {
    "/etc/strata/ca.pem"        = module.tls[0].ca_certificate_pem
    "/etc/strata/agent.pem"     = module.tls[0].certificate_pem
    "/etc/strata/agent-key.pem" = module.tls[0].private_key_pem
    "/etc/strata/tokens"        = join("\n", local.tokens)
  } : {}
  security_env = var.secure ? [
    "STRATA_TLS_CERT=/etc/strata/agent.pem",
    "STRATA_TLS_KEY=/etc/strata/agent-key.pem",
    "STRATA_TLS_CA=/etc/strata/ca.pem",
    "STRATA_AUTH_TOKENS_FILE=/etc/strata/tokens",
  ] : []
}

module "tls" {
  count        = var.secure ? 1 : 0
  source       = "../strata-tls"
  name         = var.cluster
  dns_names    = ["localhost"]
  ip_addresses = ["127.0.0.1"]
}

resource "random_password" "token" {
  count   = var.secure && length(var.auth_tokens) == 0 ? 1 : 0
  length  = 48
  special = false
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
  env          = concat(local.strata_env, local.security_env)
  command = [
    "agent",
    "--agent-id", each.key,
    "--listen", "127.0.0.1:${7070 + each.value}",
    "--metrics-listen", "127.0.0.1:${9090 + each.value}",
    "--kafka-listen", "127.0.0.1:${9192 + each.value}",
    "--cache-dir", "/var/lib/strata/cache",
  ]
  # SIGTERM hands the agent's partitions off before it exits.
  stop_timeout = 30

  volumes {
    volume_name    = docker_volume.agent_cache[each.key].name
    container_path = "/var/lib/strata/cache"
  }

  dynamic "upload" {
    for_each = local.security_files
    content {
      file    = upload.key
      content = upload.value
    }
  }

  # The health service needs no token; with TLS the client trusts STRATA_TLS_CA.
  healthcheck {
    test     = ["CMD", "strata", "--server", "${local.scheme}://127.0.0.1:${7070 + each.value}", "health"]
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
