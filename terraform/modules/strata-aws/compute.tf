# Agents: an autoscaling group behind an internal network load balancer (TLS passes
# through to the agents, which terminate it). The compactor: its own group of one.

data "aws_ssm_parameter" "ami" {
  name = var.ami_ssm_parameter
}

locals {
  metastore    = "etcd://${join(",", local.etcd_endpoints)}"
  object_store = "s3://${aws_s3_bucket.segments.id}/${var.object_prefix}"
  user_data = {
    for role in ["agent", "compactor"] : role => templatefile("${path.module}/templates/strata.sh.tftpl", {
      role             = role
      region           = local.region
      secret_arn       = aws_secretsmanager_secret.agent.arn
      metastore        = local.metastore
      etcd_max_txn_ops = var.etcd_max_txn_ops
      object_store     = local.object_store
      cluster          = var.name
      log_group        = aws_cloudwatch_log_group.strata.name
      image            = var.image
      environment = role == "agent" ? merge(
        { STRATA_CACHE_DISK_BYTES = tostring(var.cache_disk_bytes) },
        var.extra_agent_environment,
      ) : var.extra_compactor_environment
    })
  }
  instance_types  = { agent = var.agent_instance_type, compactor = var.compactor_instance_type }
  security_groups = { agent = aws_security_group.agents.id, compactor = aws_security_group.compactor.id }
  volume_gib      = { agent = var.cache_disk_gib, compactor = 30 }
}

resource "aws_launch_template" "strata" {
  for_each      = local.instance_types
  name_prefix   = "strata-${var.name}-${each.key}-"
  description   = "Strata ${var.name} ${each.key}"
  image_id      = data.aws_ssm_parameter.ami.value
  instance_type = each.value
  user_data     = base64encode(local.user_data[each.key])
  ebs_optimized = true

  iam_instance_profile {
    arn = aws_iam_instance_profile.strata[each.key].arn
  }

  vpc_security_group_ids = [local.security_groups[each.key]]

  metadata_options {
    http_endpoint               = "enabled"
    http_tokens                 = "required"
    http_put_response_hop_limit = 1
  }

  monitoring {
    enabled = true
  }

  block_device_mappings {
    device_name = "/dev/xvda"
    ebs {
      volume_size           = local.volume_gib[each.key]
      volume_type           = "gp3"
      encrypted             = true
      kms_key_id            = aws_kms_key.strata.arn
      delete_on_termination = true
    }
  }

  tag_specifications {
    resource_type = "instance"
    tags          = merge(local.tags, { Name = "strata-${var.name}-${each.key}" })
  }

  tags = local.tags
}

resource "aws_lb" "agents" {
  # checkov:skip=CKV_AWS_91:NLB access logs only record TLS listeners terminated by the load balancer; these pass TLS through to the agents, which log and count requests themselves.
  name_prefix                      = substr("st${replace(var.name, "-", "")}", 0, 6)
  internal                         = true
  load_balancer_type               = "network"
  subnets                          = var.subnet_ids
  security_groups                  = [aws_security_group.load_balancer.id]
  enable_cross_zone_load_balancing = true
  enable_deletion_protection       = var.load_balancer_deletion_protection
  tags                             = local.tags
}

resource "aws_lb_target_group" "agents" {
  name_prefix          = substr("st${replace(var.name, "-", "")}", 0, 6)
  port                 = 7070
  protocol             = "TCP"
  vpc_id               = var.vpc_id
  deregistration_delay = 60

  health_check {
    protocol            = "HTTP"
    port                = "9090"
    path                = "/metrics"
    healthy_threshold   = 2
    unhealthy_threshold = 2
    interval            = 10
  }

  tags = local.tags
}

resource "aws_lb_listener" "grpc" {
  # checkov:skip=CKV_AWS_2:TCP passthrough on purpose: the agents terminate TLS (their certificate is the module's), so clients verify the agent itself, as they must when they connect to partition owners directly.
  # checkov:skip=CKV_AWS_103:Same listener: TLS is negotiated by the agent (rustls: TLS 1.2 and 1.3 only).
  load_balancer_arn = aws_lb.agents.arn
  port              = 7070
  protocol          = "TCP"

  default_action {
    type             = "forward"
    target_group_arn = aws_lb_target_group.agents.arn
  }

  tags = local.tags
}

resource "aws_autoscaling_group" "agents" {
  name_prefix               = "strata-${var.name}-agents-"
  min_size                  = var.agent_count
  max_size                  = var.agent_count + 1
  desired_capacity          = var.agent_count
  vpc_zone_identifier       = var.subnet_ids
  target_group_arns         = [aws_lb_target_group.agents.arn]
  health_check_type         = "ELB"
  health_check_grace_period = 120
  default_instance_warmup   = 60

  launch_template {
    id      = aws_launch_template.strata["agent"].id
    version = aws_launch_template.strata["agent"].latest_version
  }

  # A new launch template (image, settings) rolls through the agents one at a time; each
  # hands its partitions off on SIGTERM (docs/OPERATIONS.md, rolling restart).
  instance_refresh {
    strategy = "Rolling"
    preferences {
      min_healthy_percentage = 100
      max_healthy_percentage = 200
      instance_warmup        = 60
    }
  }

  dynamic "tag" {
    for_each = local.tags
    content {
      key                 = tag.key
      value               = tag.value
      propagate_at_launch = true
    }
  }

  depends_on = [aws_secretsmanager_secret_version.agent]

  lifecycle {
    precondition {
      condition     = var.create_etcd != (length(var.etcd_endpoints) > 0)
      error_message = "Give etcd_endpoints (an existing etcd) or set create_etcd = true, not both and not neither."
    }
  }
}

resource "aws_autoscaling_group" "compactor" {
  name_prefix         = "strata-${var.name}-compactor-"
  min_size            = 1
  max_size            = 1
  desired_capacity    = 1
  vpc_zone_identifier = var.subnet_ids
  health_check_type   = "EC2"

  launch_template {
    id      = aws_launch_template.strata["compactor"].id
    version = aws_launch_template.strata["compactor"].latest_version
  }

  instance_refresh {
    strategy = "Rolling"
    preferences {
      min_healthy_percentage = 0
    }
  }

  dynamic "tag" {
    for_each = local.tags
    content {
      key                 = tag.key
      value               = tag.value
      propagate_at_launch = true
    }
  }

  depends_on = [aws_secretsmanager_secret_version.agent]
}
