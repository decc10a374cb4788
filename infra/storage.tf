# The one bucket (bucket layout contract):
#   src/{owner}/{repo}/{sha}.tar.gz                     sources staged for jobs
#   ci/{owner}/{repo}/{sha}/{notebook}/                 job.json, input/output notebooks, result.json
#   pipelines/{pipeline}/runs/{run_id}/...              pipeline state and step outputs
#   deliveries/{id}                                     webhook dedupe markers
resource "google_storage_bucket" "main" {
  #checkov:skip=CKV_GCP_62:Access logs would need a second bucket (and its own logs); enable Data Access audit logs for storage.googleapis.com instead when an audit trail of reads is required.
  project  = var.project_id
  name     = local.bucket_name
  location = coalesce(var.bucket_location, var.region)
  labels   = local.labels

  storage_class               = "STANDARD"
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  force_destroy               = false

  # Generation-conditional writes keep every transition exact; versions keep
  # what an overwrite replaced, for a while, for recovery.
  versioning {
    enabled = true
  }

  lifecycle_rule {
    condition {
      age            = var.ci_retention_days
      matches_prefix = ["ci/", "src/"]
      with_state     = "ANY"
    }
    action {
      type = "Delete"
    }
  }

  lifecycle_rule {
    condition {
      age            = var.delivery_marker_retention_days
      matches_prefix = ["deliveries/"]
      with_state     = "ANY"
    }
    action {
      type = "Delete"
    }
  }

  lifecycle_rule {
    condition {
      days_since_noncurrent_time = var.noncurrent_version_retention_days
      with_state                 = "ARCHIVED"
    }
    action {
      type = "Delete"
    }
  }

  depends_on = [google_project_service.main]
}

# Cloud Storage's own service agent publishes bucket notifications.
data "google_storage_project_service_account" "main" {
  project = var.project_id

  depends_on = [google_project_service.main]
}

# OBJECT_FINALIZE of every object -> the finalize topic; the push
# subscription's filter keeps only ci/ and pipelines/ objects.
resource "google_storage_notification" "finalize" {
  count = var.finalize_delivery == "pubsub" ? 1 : 0

  bucket         = google_storage_bucket.main.name
  topic          = google_pubsub_topic.finalize[0].id
  payload_format = "JSON_API_V1"
  event_types    = ["OBJECT_FINALIZE"]

  depends_on = [google_pubsub_topic_iam_member.finalize_publisher]
}
