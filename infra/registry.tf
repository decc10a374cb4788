# The four images: github-webhook, gcs-events, scheduler, runner (and
# runner-gpu). make images builds and pushes them here.
resource "google_artifact_registry_repository" "main" {
  #checkov:skip=CKV_GCP_84:Google-managed encryption; set kms_key_name if your organisation requires CMEK.
  project       = var.project_id
  location      = var.region
  repository_id = var.name_prefix
  description   = "nbci service and notebook runner images"
  format        = "DOCKER"
  labels        = local.labels

  # Old builds are removed; the ten newest versions of each image stay, so
  # a deployment can be rolled back by tag.
  cleanup_policy_dry_run = false

  cleanup_policies {
    id     = "keep-recent"
    action = "KEEP"
    most_recent_versions {
      keep_count = 10
    }
  }

  cleanup_policies {
    id     = "delete-old"
    action = "DELETE"
    condition {
      tag_state  = "ANY"
      older_than = "2592000s"
    }
  }

  depends_on = [google_project_service.main]
}
