variable "cluster" {
  description = "Cluster name: the metastore key root /strata/<cluster>."
  type        = string
  default     = "local"
}

variable "strata_image" {
  description = "Image of the strata binary. Built from build_context when that is set, else pulled or taken from the local image store."
  type        = string
  default     = "strata:local"
}

variable "build_context" {
  description = "Path of a Strata checkout to build strata_image from (its Dockerfile). Null: do not build."
  type        = string
  default     = null
}

variable "etcd_image" {
  description = "etcd image (the tests use Debian's etcd 3.4; any 3.4+ works)."
  type        = string
  default     = "quay.io/coreos/etcd:v3.5.17"
}

variable "minio_image" {
  description = "MinIO image: the S3 server."
  type        = string
  default     = "minio/minio:RELEASE.2025-04-22T22-12-26Z"
}

variable "agent_count" {
  description = "Number of agents; agent i (from 1) listens on 127.0.0.1:(7070+i), metrics on 127.0.0.1:(9090+i)."
  type        = number
  default     = 3

  validation {
    condition     = var.agent_count >= 1 && var.agent_count <= 9
    error_message = "agent_count must be 1 to 9 (ports 7071-7079)."
  }
}

variable "etcd_max_txn_ops" {
  description = "etcd's --max-txn-ops, told to the agents and the compactor too."
  type        = number
  default     = 1024
}

variable "bucket" {
  description = "MinIO bucket of the segments (created by the agents)."
  type        = string
  default     = "strata"
}

variable "minio_root_user" {
  description = "MinIO root user, also the S3 access key Strata uses."
  type        = string
  default     = "strata"
}

variable "minio_root_password" {
  description = "MinIO root password, also the S3 secret key Strata uses (at least 8 characters)."
  type        = string
  default     = "strata-local-secret"
  sensitive   = true

  validation {
    condition     = length(var.minio_root_password) >= 8
    error_message = "MinIO needs a password of at least 8 characters."
  }
}

variable "secure" {
  description = "TLS and bearer tokens on, as in the cloud: the module makes a CA, a certificate for 127.0.0.1/localhost and a token (outputs ca_certificate_pem, client_token). False: plaintext without tokens, exactly deploy/docker-compose.yml."
  type        = bool
  default     = true
}

variable "auth_tokens" {
  description = "Bearer tokens the agents require when secure (at least 16 characters each). Empty: one is generated."
  type        = list(string)
  default     = []
  sensitive   = true
}
