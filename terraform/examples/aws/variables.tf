variable "region" {
  description = "AWS region to deploy in."
  type        = string
  default     = "eu-west-1"
}

variable "name" {
  description = "Name of the Strata cluster (resource prefix, metastore root)."
  type        = string
  default     = "events"
}

variable "environment" {
  description = "Value of the environment tag on every resource."
  type        = string
  default     = "staging"
}

variable "vpc_id" {
  description = "VPC to deploy into."
  type        = string
}

variable "subnet_ids" {
  description = "Private subnets in at least two availability zones."
  type        = list(string)
}

variable "client_cidr_blocks" {
  description = "CIDR blocks of the applications that produce and consume."
  type        = list(string)
}

variable "metrics_cidr_blocks" {
  description = "CIDR blocks of the Prometheus servers scraping the agents."
  type        = list(string)
  default     = []
}

variable "image" {
  description = "The strata image in a registry the instances can pull from (ECR: <account>.dkr.ecr.<region>.amazonaws.com/strata:<tag>)."
  type        = string
}

variable "agent_count" {
  description = "Number of agents (about one per 100 MB/s of produce)."
  type        = number
  default     = 3
}
