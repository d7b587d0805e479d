# etcd: an existing cluster's endpoints, or (create_etcd) three members, one per subnet,
# with the settings Strata needs (docs/OPERATIONS.md, etcd). Their addresses are fixed
# network interfaces, so the static initial cluster is known before the instances start.

locals {
  etcd_members   = var.create_etcd ? 3 : 0
  etcd_endpoints = var.create_etcd ? [for eni in aws_network_interface.etcd : "${eni.private_ip}:2379"] : var.etcd_endpoints
  etcd_initial_cluster = join(",", [
    for i, eni in aws_network_interface.etcd : "etcd-${i}=http://${eni.private_ip}:2380"
  ])
}

resource "aws_security_group" "etcd" {
  count       = var.create_etcd ? 1 : 0
  name_prefix = "strata-${var.name}-etcd-"
  description = "Strata ${var.name} etcd: clients from agents and the compactor, peers from each other"
  vpc_id      = var.vpc_id
  tags        = local.tags

  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_vpc_security_group_ingress_rule" "etcd_clients" {
  for_each = var.create_etcd ? {
    agents    = aws_security_group.agents.id
    compactor = aws_security_group.compactor.id
    members   = aws_security_group.etcd[0].id
  } : {}
  security_group_id            = aws_security_group.etcd[0].id
  description                  = "etcd client port from ${each.key}"
  referenced_security_group_id = each.value
  ip_protocol                  = "tcp"
  from_port                    = 2379
  to_port                      = 2379
}

resource "aws_vpc_security_group_ingress_rule" "etcd_peers" {
  count                        = var.create_etcd ? 1 : 0
  security_group_id            = aws_security_group.etcd[0].id
  description                  = "etcd peer port between members"
  referenced_security_group_id = aws_security_group.etcd[0].id
  ip_protocol                  = "tcp"
  from_port                    = 2380
  to_port                      = 2380
}

resource "aws_vpc_security_group_egress_rule" "etcd" {
  for_each = var.create_etcd ? {
    peers = 2380
    https = 443
  } : {}
  security_group_id = aws_security_group.etcd[0].id
  description       = each.key == "peers" ? "etcd peers inside the VPC" : "HTTPS: image registry, CloudWatch Logs"
  cidr_ipv4         = each.key == "peers" ? data.aws_vpc.selected.cidr_block : "0.0.0.0/0"
  ip_protocol       = "tcp"
  from_port         = each.value
  to_port           = each.value
}

resource "aws_network_interface" "etcd" {
  count           = local.etcd_members
  subnet_id       = var.subnet_ids[count.index % length(var.subnet_ids)]
  security_groups = [aws_security_group.etcd[0].id]
  description     = "Strata ${var.name} etcd member ${count.index}"
  tags            = merge(local.tags, { Name = "strata-${var.name}-etcd-${count.index}" })
}

resource "aws_instance" "etcd" {
  count                = local.etcd_members
  ami                  = data.aws_ssm_parameter.ami.value
  instance_type        = var.etcd_instance_type
  iam_instance_profile = aws_iam_instance_profile.strata["etcd"].name
  ebs_optimized        = true
  monitoring           = true

  network_interface {
    network_interface_id = aws_network_interface.etcd[count.index].id
    device_index         = 0
  }

  metadata_options {
    http_endpoint               = "enabled"
    http_tokens                 = "required"
    http_put_response_hop_limit = 1
  }

  root_block_device {
    volume_size = var.etcd_volume_gib
    volume_type = "gp3"
    encrypted   = true
    kms_key_id  = aws_kms_key.strata.arn
  }

  user_data = templatefile("${path.module}/templates/etcd.sh.tftpl", {
    member          = "etcd-${count.index}"
    address         = aws_network_interface.etcd[count.index].private_ip
    initial_cluster = local.etcd_initial_cluster
    cluster_token   = "strata-${var.name}"
    image           = var.etcd_image
    max_txn_ops     = var.etcd_max_txn_ops
    region          = local.region
    log_group       = aws_cloudwatch_log_group.strata.name
  })
  user_data_replace_on_change = false

  tags = merge(local.tags, { Name = "strata-${var.name}-etcd-${count.index}" })

  lifecycle {
    # A member keeps its data: a new AMI must not replace all three at once.
    ignore_changes = [ami, user_data]
  }
}
