# A Strata cluster on this machine with Docker: etcd, MinIO, three agents, a compactor —
# what deploy/docker-compose.yml starts, managed by terraform.

terraform {
  required_version = ">= 1.5.0"

  required_providers {
    docker = {
      source  = "kreuzwerker/docker"
      version = ">= 3.0, < 4.0"
    }
  }
}

provider "docker" {}

module "strata" {
  source = "../../modules/strata-local"

  build_context       = abspath("${path.root}/../../..")
  agent_count         = var.agent_count
  minio_root_password = var.minio_root_password
}
