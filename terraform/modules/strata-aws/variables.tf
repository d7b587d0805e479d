variable "name" {
  description = "Name of this Strata cluster: prefixes every resource and is the metastore key root (/strata/<name>)."
  type        = string

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,30}[a-z0-9]$", var.name))
    error_message = "name must be 3-32 characters of lowercase letters, digits and dashes, starting with a letter."
  }
}

variable "vpc_id" {
  description = "VPC the agents, the compactor, the load balancer and (optionally) etcd run in."
  type        = string
}

variable "subnet_ids" {
  description = "Private subnets, one per availability zone (at least two): agents are spread over them, the internal load balancer has a leg in each."
  type        = list(string)

  validation {
    condition     = length(var.subnet_ids) >= 2
    error_message = "give at least two subnets (two availability zones)."
  }
}

variable "client_cidr_blocks" {
  description = "CIDR blocks of the producers and consumers allowed to reach the agents' gRPC port (through the load balancer and directly: clients talk to partition owners)."
  type        = list(string)

  validation {
    condition     = length(var.client_cidr_blocks) > 0 && !contains(var.client_cidr_blocks, "0.0.0.0/0")
    error_message = "name the clients' CIDR blocks; 0.0.0.0/0 is not accepted."
  }
}

variable "metrics_cidr_blocks" {
  description = "CIDR blocks allowed to scrape the agents' Prometheus metrics port (9090). Empty: none."
  type        = list(string)
  default     = []
}

variable "image" {
  description = "Container image of the strata binary (built from the repository's Dockerfile and pushed to a registry the instances can pull from, e.g. ECR)."
  type        = string
}

variable "agent_count" {
  description = "Number of agents. Sizing: about one 2-vCPU agent per 100 MB/s of produce (docs/OPERATIONS.md)."
  type        = number
  default     = 3

  validation {
    condition     = var.agent_count >= 1
    error_message = "agent_count must be at least 1."
  }
}

variable "agent_instance_type" {
  description = "EC2 instance type of the agents (network and CPU bound)."
  type        = string
  default     = "c7g.large"
}

variable "compactor_instance_type" {
  description = "EC2 instance type of the compactor (memory: log compaction keeps a key map per partition)."
  type        = string
  default     = "m7g.large"
}

variable "ami_ssm_parameter" {
  description = "SSM parameter holding the AMI id of the instances (Amazon Linux 2023; its architecture must match the instance types and the image)."
  type        = string
  default     = "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-arm64"
}

variable "cache_disk_gib" {
  description = "Size of each agent's root volume, GiB; the block cache's disk tier uses cache_disk_bytes of it."
  type        = number
  default     = 50
}

variable "cache_disk_bytes" {
  description = "Bytes of each agent's block cache disk tier (keep it well under cache_disk_gib)."
  type        = number
  default     = 21474836480
}

variable "object_prefix" {
  description = "Prefix of Strata's objects in the bucket (segments under it, the Parquet archive under <prefix>/archive)."
  type        = string
  default     = "strata"
}

variable "bucket_force_destroy" {
  description = "Let terraform destroy the bucket with its objects (every record). Keep false outside tests."
  type        = bool
  default     = false
}

variable "etcd_endpoints" {
  description = "host:port of every member of an existing etcd cluster (v3.4+, --max-txn-ops >= 1024). Empty: set create_etcd = true instead."
  type        = list(string)
  default     = []
}

variable "etcd_max_txn_ops" {
  description = "The etcd cluster's --max-txn-ops (the created etcd uses it; an existing cluster must have been started with it)."
  type        = number
  default     = 1024
}

variable "create_etcd" {
  description = "Create a 3-member etcd cluster (one instance per subnet, encrypted volumes) instead of using etcd_endpoints."
  type        = bool
  default     = false
}

variable "etcd_instance_type" {
  description = "EC2 instance type of the created etcd members (etcd wants fast disks and little CPU)."
  type        = string
  default     = "m7g.large"
}

variable "etcd_image" {
  description = "Container image of the created etcd members."
  type        = string
  default     = "quay.io/coreos/etcd:v3.5.17"
}

variable "etcd_volume_gib" {
  description = "Size of each created etcd member's root volume (gp3), GiB."
  type        = number
  default     = 50
}

variable "tls_ca_certificate_pem" {
  description = "CA certificate (PEM) that signed tls_certificate_pem; clients trust it. Empty: the module creates a private CA (its key is kept in the terraform state)."
  type        = string
  default     = ""
}

variable "tls_certificate_pem" {
  description = "The agents' certificate (PEM), valid for the load balancer's DNS name and *.<region>.compute.internal (what agents advertise). Empty: issued by the module's CA."
  type        = string
  default     = ""
}

variable "tls_private_key_pem" {
  description = "The private key (PEM) of tls_certificate_pem."
  type        = string
  default     = ""
  sensitive   = true
}

variable "tls_client_ca_certificate_pem" {
  description = "Require client certificates signed by this CA (mutual TLS). Empty: clients authenticate by token only. The agents' own certificate must be signed by it too (they present it to each other)."
  type        = string
  default     = ""
}

variable "auth_tokens" {
  description = "Bearer tokens the agents accept (at least 16 characters each). Empty: the module generates one (output client_token)."
  type        = list(string)
  default     = []
  sensitive   = true
}

variable "extra_agent_environment" {
  description = "More STRATA_* settings for the agents (e.g. STRATA_LINGER_MS), as name => value."
  type        = map(string)
  default     = {}
}

variable "extra_compactor_environment" {
  description = "More STRATA_* settings for the compactor (e.g. STRATA_ARCHIVE_INTERVAL), as name => value."
  type        = map(string)
  default     = {}
}

variable "enable_ssm_session_manager" {
  description = "Attach AmazonSSMManagedInstanceCore to the instances' roles so operators can open shells without SSH."
  type        = bool
  default     = true
}

variable "load_balancer_deletion_protection" {
  description = "Protect the internal load balancer from deletion."
  type        = bool
  default     = true
}

variable "log_retention_days" {
  description = "Days the instances' logs are kept in CloudWatch Logs."
  type        = number
  default     = 365
}

variable "tags" {
  description = "Tags added to every resource."
  type        = map(string)
  default     = {}
}
