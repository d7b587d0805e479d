# TLS and bearer tokens: always on. The agents' certificate, key, the CAs and the tokens
# go to one Secrets Manager secret (encrypted with the cluster's key) that the instances
# read at boot; nothing secret is in user data.

locals {
  # What agents advertise (their private DNS name) ends in this.
  private_dns_suffix = local.region == "us-east-1" ? "ec2.internal" : "${local.region}.compute.internal"
  generate_tls       = var.tls_certificate_pem == ""
  ca_certificate_pem = local.generate_tls ? module.tls[0].ca_certificate_pem : var.tls_ca_certificate_pem
  agent_cert_pem     = local.generate_tls ? module.tls[0].certificate_pem : var.tls_certificate_pem
  agent_key_pem      = local.generate_tls ? module.tls[0].private_key_pem : var.tls_private_key_pem
  auth_tokens        = length(var.auth_tokens) > 0 ? var.auth_tokens : [random_password.token[0].result]
}

module "tls" {
  count        = local.generate_tls ? 1 : 0
  source       = "../strata-tls"
  name         = var.name
  dns_names    = [aws_lb.agents.dns_name, "*.${local.private_dns_suffix}", "localhost"]
  ip_addresses = ["127.0.0.1"]
}

resource "random_password" "token" {
  count   = length(var.auth_tokens) > 0 ? 0 : 1
  length  = 48
  special = false
}

resource "aws_secretsmanager_secret" "agent" {
  # checkov:skip=CKV2_AWS_57:Rotation is a rolling change of certificate and tokens (docs/OPERATIONS.md, Security); a Lambda rotating them behind the agents' back would lock clients out.
  name_prefix             = "strata-${var.name}-agent-"
  description             = "Strata ${var.name}: agent TLS certificate, key, CAs and bearer tokens"
  kms_key_id              = aws_kms_key.strata.arn
  recovery_window_in_days = 7
  tags                    = local.tags
}

resource "aws_secretsmanager_secret_version" "agent" {
  secret_id = aws_secretsmanager_secret.agent.id
  secret_string = jsonencode({
    "ca.pem"        = local.ca_certificate_pem
    "agent.pem"     = local.agent_cert_pem
    "agent-key.pem" = local.agent_key_pem
    "client-ca.pem" = var.tls_client_ca_certificate_pem
    "tokens"        = join("\n", local.auth_tokens)
  })
}

resource "aws_security_group" "agents" {
  name_prefix = "strata-${var.name}-agents-"
  description = "Strata ${var.name} agents: gRPC from clients, the load balancer and each other"
  vpc_id      = var.vpc_id
  tags        = local.tags

  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_security_group" "load_balancer" {
  name_prefix = "strata-${var.name}-nlb-"
  description = "Strata ${var.name} internal load balancer: gRPC from clients"
  vpc_id      = var.vpc_id
  tags        = local.tags

  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_security_group" "compactor" {
  name_prefix = "strata-${var.name}-compactor-"
  description = "Strata ${var.name} compactor: no inbound traffic"
  vpc_id      = var.vpc_id
  tags        = local.tags

  lifecycle {
    create_before_destroy = true
  }
}

data "aws_vpc" "selected" {
  id = var.vpc_id
}

resource "aws_vpc_security_group_ingress_rule" "agents_from_clients" {
  for_each          = toset(var.client_cidr_blocks)
  security_group_id = aws_security_group.agents.id
  description       = "gRPC (TLS) from clients, straight to partition owners"
  cidr_ipv4         = each.value
  ip_protocol       = "tcp"
  from_port         = 7070
  to_port           = 7070
}

resource "aws_vpc_security_group_ingress_rule" "agents_from_load_balancer" {
  security_group_id            = aws_security_group.agents.id
  description                  = "gRPC (TLS) from the internal load balancer"
  referenced_security_group_id = aws_security_group.load_balancer.id
  ip_protocol                  = "tcp"
  from_port                    = 7070
  to_port                      = 7070
}

resource "aws_vpc_security_group_ingress_rule" "agents_health_from_load_balancer" {
  security_group_id            = aws_security_group.agents.id
  description                  = "Load balancer health checks (metrics endpoint)"
  referenced_security_group_id = aws_security_group.load_balancer.id
  ip_protocol                  = "tcp"
  from_port                    = 9090
  to_port                      = 9090
}

resource "aws_vpc_security_group_ingress_rule" "agents_from_agents" {
  security_group_id            = aws_security_group.agents.id
  description                  = "gRPC (TLS) between agents: forwarded produce and group requests"
  referenced_security_group_id = aws_security_group.agents.id
  ip_protocol                  = "tcp"
  from_port                    = 7070
  to_port                      = 7070
}

resource "aws_vpc_security_group_ingress_rule" "agents_metrics" {
  for_each          = toset(var.metrics_cidr_blocks)
  security_group_id = aws_security_group.agents.id
  description       = "Prometheus scrapes"
  cidr_ipv4         = each.value
  ip_protocol       = "tcp"
  from_port         = 9090
  to_port           = 9090
}

resource "aws_vpc_security_group_ingress_rule" "load_balancer_from_clients" {
  for_each          = toset(var.client_cidr_blocks)
  security_group_id = aws_security_group.load_balancer.id
  description       = "gRPC (TLS) from clients"
  cidr_ipv4         = each.value
  ip_protocol       = "tcp"
  from_port         = 7070
  to_port           = 7070
}

resource "aws_vpc_security_group_egress_rule" "load_balancer_to_agents" {
  for_each = {
    grpc   = 7070
    health = 9090
  }
  security_group_id            = aws_security_group.load_balancer.id
  description                  = "To the agents: ${each.key}"
  referenced_security_group_id = aws_security_group.agents.id
  ip_protocol                  = "tcp"
  from_port                    = each.value
  to_port                      = each.value
}

# Agents and the compactor reach S3, Secrets Manager, CloudWatch Logs and the image
# registry over HTTPS, and etcd inside the VPC; nothing else.
resource "aws_vpc_security_group_egress_rule" "https" {
  for_each          = { agents = aws_security_group.agents.id, compactor = aws_security_group.compactor.id }
  security_group_id = each.value
  description       = "HTTPS: S3, Secrets Manager, CloudWatch Logs, image registry"
  cidr_ipv4         = "0.0.0.0/0"
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
}

resource "aws_vpc_security_group_egress_rule" "etcd" {
  for_each          = { agents = aws_security_group.agents.id, compactor = aws_security_group.compactor.id }
  security_group_id = each.value
  description       = "etcd client port inside the VPC"
  cidr_ipv4         = data.aws_vpc.selected.cidr_block
  ip_protocol       = "tcp"
  from_port         = 2379
  to_port           = 2379
}

resource "aws_vpc_security_group_egress_rule" "agents_to_agents" {
  security_group_id            = aws_security_group.agents.id
  description                  = "gRPC (TLS) to other agents"
  referenced_security_group_id = aws_security_group.agents.id
  ip_protocol                  = "tcp"
  from_port                    = 7070
  to_port                      = 7070
}
