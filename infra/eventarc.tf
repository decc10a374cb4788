# finalize_delivery = "eventarc": an Eventarc trigger delivers every
# finalized object of the bucket to gcs-events as a CloudEvent (binary mode),
# with an ID token of the push account. Eventarc cannot filter on object
# prefixes, so gcs-events is woken for src/ and deliveries/ objects too and
# ignores them; Eventarc manages its own topic and retries (no dead-letter
# topic is configurable here: that is why "pubsub" is the default).

# Eventarc's Cloud Storage triggers require the Cloud Storage service agent to
# publish to the project's Pub/Sub topics (a project-level grant Google
# documents for this trigger type; the topic is created by Eventarc).
resource "google_project_iam_member" "eventarc_gcs_publisher" {
  count = var.finalize_delivery == "eventarc" ? 1 : 0

  project = var.project_id
  role    = "roles/pubsub.publisher"
  member  = data.google_storage_project_service_account.main.member
}

# The trigger's identity must be allowed to receive events.
resource "google_project_iam_member" "eventarc_receiver" {
  count = var.finalize_delivery == "eventarc" ? 1 : 0

  project = var.project_id
  role    = "roles/eventarc.eventReceiver"
  member  = google_service_account.push.member
}

resource "google_eventarc_trigger" "finalize" {
  count = var.finalize_delivery == "eventarc" && var.deploy_services ? 1 : 0

  project         = var.project_id
  name            = "${var.name_prefix}-finalize"
  location        = lower(coalesce(var.bucket_location, var.region))
  service_account = google_service_account.push.email
  labels          = local.labels

  matching_criteria {
    attribute = "type"
    value     = "google.cloud.storage.object.v1.finalized"
  }

  matching_criteria {
    attribute = "bucket"
    value     = google_storage_bucket.main.name
  }

  destination {
    cloud_run_service {
      service = module.gcs_events.service_name
      region  = var.region
      path    = "/"
    }
  }

  depends_on = [
    google_project_iam_member.eventarc_gcs_publisher,
    google_project_iam_member.eventarc_receiver,
    module.gcs_events,
  ]
}
