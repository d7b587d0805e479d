# A Strata cluster in an existing VPC: three agents behind an internal load balancer, a
# compactor, a 3-member etcd, an encrypted bucket; TLS and a bearer token on.

terraform {
  required_version = ">= 1.5.0"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = ">= 5.40, < 7.0"
    }
  }
}

provider "aws" {
  region = var.region
}

module "strata" {
  source = "../../modules/strata-aws"

  name                = var.name
  vpc_id              = var.vpc_id
  subnet_ids          = var.subnet_ids
  client_cidr_blocks  = var.client_cidr_blocks
  metrics_cidr_blocks = var.metrics_cidr_blocks
  image               = var.image
  agent_count         = var.agent_count
  create_etcd         = true
  tags                = { environment = var.environment }
}
