output "grpc_endpoint" {
  description = "STRATA_SERVER for the CLI and the SDK."
  value       = module.strata.grpc_endpoint
}

output "ca_certificate_pem" {
  description = "Save as ca.pem and pass --tls-ca ca.pem (STRATA_TLS_CA)."
  value       = module.strata.ca_certificate_pem
}

output "client_token" {
  description = "Bearer token for --token (STRATA_TOKEN): terraform output -raw client_token."
  value       = module.strata.client_token
  sensitive   = true
}

output "archive_location" {
  description = "Where archived topics' Parquet files land."
  value       = module.strata.archive_location
}

output "etcd_endpoints" {
  description = "The created etcd members."
  value       = module.strata.etcd_endpoints
}
