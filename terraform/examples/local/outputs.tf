output "server" {
  description = "export STRATA_SERVER=<this>"
  value       = module.strata.server
}

output "agent_addresses" {
  description = "Every agent's gRPC address."
  value       = module.strata.agent_addresses
}

output "minio_console" {
  description = "MinIO's console."
  value       = module.strata.minio_console
}

output "ca_certificate_pem" {
  description = "Save as ca.pem: --tls-ca ca.pem (STRATA_TLS_CA)."
  value       = module.strata.ca_certificate_pem
}

output "client_token" {
  description = "Bearer token: --token (STRATA_TOKEN); terraform output -raw client_token."
  value       = module.strata.client_token
  sensitive   = true
}
