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
