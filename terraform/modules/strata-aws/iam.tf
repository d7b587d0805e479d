# Least privilege: agents read and write segments (create-only PUTs; they delete only
# their own start-up probe under <prefix>/_strata/); the compactor also deletes and lists
# (retention, merges, orphan GC). Both read the one secret and write their log streams.

locals {
  objects_arn = "${aws_s3_bucket.segments.arn}/${var.object_prefix}/*"
  probe_arn   = "${aws_s3_bucket.segments.arn}/${var.object_prefix}/_strata/*"
  roles = merge(
    {
      agent     = "agents: segment PUTs and reads"
      compactor = "compactor: retention, compaction, merges, archive, orphan GC"
    },
    var.create_etcd ? { etcd = "etcd members: their logs only" } : {},
  )
  role_policies = {
    agent     = data.aws_iam_policy_document.agent.json
    compactor = data.aws_iam_policy_document.compactor.json
    etcd      = data.aws_iam_policy_document.logs.json
  }
}

data "aws_iam_policy_document" "assume_ec2" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["ec2.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "strata" {
  for_each             = local.roles
  name_prefix          = "strata-${var.name}-${each.key}-"
  description          = "Strata ${var.name} ${each.value}"
  assume_role_policy   = data.aws_iam_policy_document.assume_ec2.json
  max_session_duration = 3600
  tags                 = local.tags
}

resource "aws_iam_instance_profile" "strata" {
  for_each    = local.roles
  name_prefix = "strata-${var.name}-${each.key}-"
  role        = aws_iam_role.strata[each.key].name
  tags        = local.tags
}

data "aws_iam_policy_document" "common" {
  source_policy_documents = [data.aws_iam_policy_document.logs.json]
  statement {
    sid       = "ListThePrefix"
    actions   = ["s3:ListBucket"]
    resources = [aws_s3_bucket.segments.arn]
    condition {
      test     = "StringLike"
      variable = "s3:prefix"
      values   = ["${var.object_prefix}/*", var.object_prefix, ""]
    }
  }
  statement {
    sid       = "ReadAndWriteObjects"
    actions   = ["s3:GetObject", "s3:PutObject", "s3:AbortMultipartUpload"]
    resources = [local.objects_arn]
  }
  statement {
    sid       = "EncryptObjects"
    actions   = ["kms:GenerateDataKey", "kms:Decrypt"]
    resources = [aws_kms_key.strata.arn]
  }
  statement {
    sid       = "ReadTheSecret"
    actions   = ["secretsmanager:GetSecretValue"]
    resources = [aws_secretsmanager_secret.agent.arn]
  }
}

data "aws_iam_policy_document" "logs" {
  statement {
    sid       = "WriteLogs"
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents"]
    resources = ["${aws_cloudwatch_log_group.strata.arn}:*"]
  }
}

data "aws_iam_policy_document" "agent" {
  source_policy_documents = [data.aws_iam_policy_document.common.json]
  statement {
    sid       = "DeleteTheStartupProbe"
    actions   = ["s3:DeleteObject"]
    resources = [local.probe_arn]
  }
}

data "aws_iam_policy_document" "compactor" {
  source_policy_documents = [data.aws_iam_policy_document.common.json]
  statement {
    sid       = "DeleteRetiredObjects"
    actions   = ["s3:DeleteObject"]
    resources = [local.objects_arn]
  }
}

resource "aws_iam_role_policy" "strata" {
  for_each = local.roles
  name     = "strata-${each.key}"
  role     = aws_iam_role.strata[each.key].id
  policy   = local.role_policies[each.key]
}

resource "aws_iam_role_policy_attachment" "ssm" {
  for_each   = var.enable_ssm_session_manager ? local.roles : {}
  role       = aws_iam_role.strata[each.key].name
  policy_arn = "arn:${local.partition}:iam::aws:policy/AmazonSSMManagedInstanceCore"
}
