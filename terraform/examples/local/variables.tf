variable "agent_count" {
  description = "Number of agents (ports 7071 and up)."
  type        = number
  default     = 3
}

variable "minio_root_password" {
  description = "MinIO root password, also Strata's S3 secret key."
  type        = string
  default     = "strata-local-secret"
  sensitive   = true
}
