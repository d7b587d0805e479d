output "server" {
  description = "gRPC address of the first agent: export STRATA_SERVER=<this> for the CLI (any agent serves every request)."
  value       = "${local.scheme}://127.0.0.1:7071"
}

output "ca_certificate_pem" {
  description = "CA certificate the clients trust (--tls-ca, STRATA_TLS_CA); null when not secure."
  value       = var.secure ? module.tls[0].ca_certificate_pem : null
}

output "client_token" {
  description = "A bearer token the agents accept (--token, STRATA_TOKEN); null when not secure."
  value       = var.secure ? local.tokens[0] : null
  sensitive   = true
}

output "agent_addresses" {
  description = "gRPC address of every agent, by agent id."
  value       = { for name, i in local.agents : name => "127.0.0.1:${7070 + i}" }
}

output "metrics_urls" {
  description = "Prometheus metrics of every agent, by agent id."
  value       = { for name, i in local.agents : name => "http://127.0.0.1:${9090 + i}/metrics" }
}

output "etcd_endpoint" {
  description = "etcd client endpoint (etcdctl --endpoints)."
  value       = "http://127.0.0.1:2379"
}

output "s3_endpoint" {
  description = "MinIO's S3 endpoint; the segments are in the bucket named by the bucket variable."
  value       = "http://127.0.0.1:9000"
}

output "minio_console" {
  description = "MinIO's web console (log in with minio_root_user and minio_root_password)."
  value       = "http://127.0.0.1:9001"
}

output "object_store" {
  description = "The cluster's object store URL, as agents and the compactor are given it."
  value       = local.strata_environment["STRATA_OBJECT_STORE"]
}
