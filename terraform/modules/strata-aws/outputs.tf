output "grpc_endpoint" {
  description = "Where clients connect: --server for the CLI, Connector::connect for the SDK (TLS; give ca_certificate_pem as --tls-ca)."
  value       = "https://${aws_lb.agents.dns_name}:7070"
}

output "ca_certificate_pem" {
  description = "CA certificate clients trust for the agents' TLS (--tls-ca, STRATA_TLS_CA)."
  value       = local.ca_certificate_pem
}

output "client_token" {
  description = "A bearer token the agents accept (--token, STRATA_TOKEN): the first of auth_tokens, or the generated one."
  value       = local.auth_tokens[0]
  sensitive   = true
}

output "bucket" {
  description = "The S3 bucket of the cluster's segments and Parquet archive."
  value       = aws_s3_bucket.segments.id
}

output "object_store" {
  description = "The cluster's object store URL, as agents and the compactor are given it."
  value       = local.object_store
}

output "archive_location" {
  description = "Where Parquet archives of topics with archive.enabled=true land (query with DuckDB, Athena, Spark)."
  value       = "s3://${aws_s3_bucket.segments.id}/${var.object_prefix}/archive/"
}

output "kms_key_arn" {
  description = "KMS key encrypting the bucket, volumes, logs and the agents' secret (readers of the archive need kms:Decrypt on it)."
  value       = aws_kms_key.strata.arn
}

output "etcd_endpoints" {
  description = "etcd client endpoints the cluster uses (created or given)."
  value       = local.etcd_endpoints
}

output "agent_security_group_id" {
  description = "Security group of the agents (add rules to admit more clients)."
  value       = aws_security_group.agents.id
}

output "agent_role_arn" {
  description = "IAM role of the agents."
  value       = aws_iam_role.strata["agent"].arn
}

output "compactor_role_arn" {
  description = "IAM role of the compactor."
  value       = aws_iam_role.strata["compactor"].arn
}

output "log_group" {
  description = "CloudWatch Logs group of the agents', compactor's (and etcd members') logs."
  value       = aws_cloudwatch_log_group.strata.name
}
