locals {
  apis = concat(
    [
      "aiplatform.googleapis.com",
      "artifactregistry.googleapis.com",
      "cloudresourcemanager.googleapis.com",
      "cloudscheduler.googleapis.com",
      "iam.googleapis.com",
      "iamcredentials.googleapis.com",
      "pubsub.googleapis.com",
      "run.googleapis.com",
      "secretmanager.googleapis.com",
      "storage.googleapis.com",
    ],
    var.finalize_delivery == "eventarc" ? ["eventarc.googleapis.com"] : [],
    local.uses_ai_platform ? ["ml.googleapis.com"] : [],
  )
}

resource "google_project_service" "main" {
  for_each = toset(local.apis)

  project = var.project_id
  service = each.value

  # Other workloads in the project may use these APIs too: never turn them off.
  disable_on_destroy = false
}

# The Pub/Sub service agent signs push requests' ID tokens and moves messages
# to dead-letter topics; it exists once asked for.
resource "google_project_service_identity" "pubsub" {
  provider = google-beta

  project = var.project_id
  service = "pubsub.googleapis.com"

  depends_on = [google_project_service.main]
}
