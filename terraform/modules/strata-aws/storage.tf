# The bucket every segment and archive file lives in, and the KMS key that encrypts it
# (and the instances' logs and the TLS/token secret).

data "aws_caller_identity" "current" {}
data "aws_region" "current" {}
data "aws_partition" "current" {}

locals {
  account_id = data.aws_caller_identity.current.account_id
  region     = data.aws_region.current.name
  partition  = data.aws_partition.current.partition
  log_group  = "/strata/${var.name}"
  tags       = merge({ "strata:cluster" = var.name }, var.tags)
}

resource "aws_kms_key" "strata" {
  description         = "Strata cluster ${var.name}: segments, archive, logs, TLS key and tokens"
  enable_key_rotation = true
  policy              = data.aws_iam_policy_document.kms.json
  tags                = local.tags
}

resource "aws_kms_alias" "strata" {
  name          = "alias/strata-${var.name}"
  target_key_id = aws_kms_key.strata.key_id
}

data "aws_iam_policy_document" "kms" {
  # checkov:skip=CKV_AWS_109:The account root keeps administration of its own key (AWS's default key policy); without it the key becomes unmanageable.
  # checkov:skip=CKV_AWS_111:Same statement: key policies name the key itself ("*" is this key).
  # checkov:skip=CKV_AWS_356:Same statement: "*" in a key policy is the key the policy is attached to.
  statement {
    sid       = "AccountAdministers"
    actions   = ["kms:*"]
    resources = ["*"]
    principals {
      type        = "AWS"
      identifiers = ["arn:${local.partition}:iam::${local.account_id}:root"]
    }
  }

  statement {
    sid       = "CloudWatchLogsEncrypt"
    actions   = ["kms:Encrypt*", "kms:Decrypt*", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:Describe*"]
    resources = ["*"]
    principals {
      type        = "Service"
      identifiers = ["logs.${local.region}.amazonaws.com"]
    }
    condition {
      test     = "ArnLike"
      variable = "kms:EncryptionContext:aws:logs:arn"
      values   = ["arn:${local.partition}:logs:${local.region}:${local.account_id}:log-group:${local.log_group}*"]
    }
  }
}

resource "aws_s3_bucket" "segments" {
  # checkov:skip=CKV_AWS_18:Access logging is the operator's choice (it needs a log bucket this module does not own); Strata's own requests are counted by its metrics.
  # checkov:skip=CKV_AWS_144:Cross-region replication doubles the storage bill; Strata's durability is S3's (11 nines in a region). Add replication outside the module if a region loss must be survived.
  # checkov:skip=CKV2_AWS_62:Strata does not consume bucket events.
  # checkov:skip=CKV_AWS_21:Versioning stays off on purpose: segments are written once (create-only) and deleted only by the compactor after retention or a merge; versions would keep every deleted byte billed.
  bucket_prefix = "strata-${var.name}-"
  force_destroy = var.bucket_force_destroy
  tags          = local.tags
}

# Off, not suspended: the bucket never had versions (see the skip above).
resource "aws_s3_bucket_versioning" "segments" {
  bucket = aws_s3_bucket.segments.id
  versioning_configuration {
    status = "Disabled"
  }
}

resource "aws_s3_bucket_public_access_block" "segments" {
  bucket                  = aws_s3_bucket.segments.id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_ownership_controls" "segments" {
  bucket = aws_s3_bucket.segments.id
  rule {
    object_ownership = "BucketOwnerEnforced"
  }
}

resource "aws_s3_bucket_server_side_encryption_configuration" "segments" {
  bucket = aws_s3_bucket.segments.id
  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm     = "aws:kms"
      kms_master_key_id = aws_kms_key.strata.arn
    }
    # One data key per bucket and period instead of per object: segment PUTs are many.
    bucket_key_enabled = true
  }
}

# Multipart uploads a crashed writer left behind are aborted after a day; nothing else
# expires here: retention is the compactor's (per topic, by offsets in etcd).
resource "aws_s3_bucket_lifecycle_configuration" "segments" {
  bucket = aws_s3_bucket.segments.id
  rule {
    id     = "strata-abort-stale-multipart-uploads"
    status = "Enabled"
    filter {
      prefix = ""
    }
    abort_incomplete_multipart_upload {
      days_after_initiation = 1
    }
  }
}

data "aws_iam_policy_document" "bucket" {
  statement {
    sid       = "DenyPlaintext"
    effect    = "Deny"
    actions   = ["s3:*"]
    resources = [aws_s3_bucket.segments.arn, "${aws_s3_bucket.segments.arn}/*"]
    principals {
      type        = "*"
      identifiers = ["*"]
    }
    condition {
      test     = "Bool"
      variable = "aws:SecureTransport"
      values   = ["false"]
    }
  }
}

resource "aws_s3_bucket_policy" "segments" {
  bucket     = aws_s3_bucket.segments.id
  policy     = data.aws_iam_policy_document.bucket.json
  depends_on = [aws_s3_bucket_public_access_block.segments]
}

resource "aws_cloudwatch_log_group" "strata" {
  name              = local.log_group
  retention_in_days = var.log_retention_days
  kms_key_id        = aws_kms_key.strata.arn
  tags              = local.tags
}
