# Two flows use Pub/Sub push with Google-signed ID tokens:
#   finalize: bucket notifications -> gcs-events POST /   (when finalize_delivery = "pubsub")
#   dispatch: github-webhook publishes its work -> github-webhook POST /dispatch
# Each has a dead-letter topic with a pull subscription, so a message that
# keeps failing is kept for inspection instead of retried forever.

locals {
  pubsub_agent = "serviceAccount:${google_project_service_identity.pubsub.email}"
}

# The identity whose ID tokens the push subscriptions (and the Eventarc
# trigger) present: gcs-events admits it through roles/run.invoker, and
# github-webhook's /dispatch checks it itself (NBCI_OIDC_EMAIL), because that
# service is public.
resource "google_service_account" "push" {
  project      = var.project_id
  account_id   = "${var.name_prefix}-push"
  display_name = "nbci event delivery"
  description  = "Signs the ID tokens of Pub/Sub push and Eventarc deliveries to the nbci services."
}

# Pub/Sub mints the push ID tokens as this account.
resource "google_service_account_iam_member" "push_token_creator" {
  service_account_id = google_service_account.push.name
  role               = "roles/iam.serviceAccountTokenCreator"
  member             = local.pubsub_agent
}

# --- finalize ---------------------------------------------------------------

resource "google_pubsub_topic" "finalize" {
  #checkov:skip=CKV_GCP_83:Messages are object metadata only and live minutes; Google-managed encryption. Set kms_key_name here if your organisation requires CMEK.
  count = var.finalize_delivery == "pubsub" ? 1 : 0

  project = var.project_id
  name    = "${var.name_prefix}-finalize"
  labels  = local.labels

  message_retention_duration = "86400s"

  depends_on = [google_project_service.main]
}

resource "google_pubsub_topic_iam_member" "finalize_publisher" {
  count = var.finalize_delivery == "pubsub" ? 1 : 0

  project = var.project_id
  topic   = google_pubsub_topic.finalize[0].name
  role    = "roles/pubsub.publisher"
  member  = data.google_storage_project_service_account.main.member
}

resource "google_pubsub_topic" "finalize_dead_letter" {
  #checkov:skip=CKV_GCP_83:Dead-lettered object metadata; Google-managed encryption. Set kms_key_name here if your organisation requires CMEK.
  count = var.finalize_delivery == "pubsub" ? 1 : 0

  project = var.project_id
  name    = "${var.name_prefix}-finalize-dead-letter"
  labels  = local.labels

  depends_on = [google_project_service.main]
}

resource "google_pubsub_subscription" "finalize" {
  count = var.finalize_delivery == "pubsub" && var.deploy_services ? 1 : 0

  project = var.project_id
  name    = "${var.name_prefix}-finalize-to-gcs-events"
  topic   = google_pubsub_topic.finalize[0].id
  labels  = local.labels

  # Only objects the services act on; src/ tarballs and delivery markers
  # never wake gcs-events. (Pub/Sub filters have prefixes, not suffixes:
  # gcs-events itself ignores everything but result.json.)
  filter = "attributes.eventType = \"OBJECT_FINALIZE\" AND (hasPrefix(attributes.objectId, \"ci/\") OR hasPrefix(attributes.objectId, \"pipelines/\"))"

  ack_deadline_seconds       = 300
  message_retention_duration = "86400s"

  push_config {
    push_endpoint = "${local.service_urls.gcs_events}/"
    oidc_token {
      service_account_email = google_service_account.push.email
      audience              = local.service_urls.gcs_events
    }
  }

  retry_policy {
    minimum_backoff = "10s"
    maximum_backoff = "600s"
  }

  dead_letter_policy {
    dead_letter_topic     = google_pubsub_topic.finalize_dead_letter[0].id
    max_delivery_attempts = var.max_delivery_attempts
  }

  expiration_policy {
    ttl = ""
  }

  depends_on = [module.gcs_events]
}

resource "google_pubsub_subscription" "finalize_dead_letter" {
  count = var.finalize_delivery == "pubsub" ? 1 : 0

  project = var.project_id
  name    = "${var.name_prefix}-finalize-dead-letter"
  topic   = google_pubsub_topic.finalize_dead_letter[0].id
  labels  = local.labels

  message_retention_duration = "604800s"

  expiration_policy {
    ttl = ""
  }
}

# --- dispatch ----------------------------------------------------------------

resource "google_pubsub_topic" "dispatch" {
  #checkov:skip=CKV_GCP_83:Messages are webhook triggers (repository, commit, installation id) that live minutes; Google-managed encryption. Set kms_key_name here if your organisation requires CMEK.
  project = var.project_id
  name    = "${var.name_prefix}-dispatch"
  labels  = local.labels

  message_retention_duration = "86400s"

  depends_on = [google_project_service.main]
}

resource "google_pubsub_topic_iam_member" "dispatch_publisher" {
  project = var.project_id
  topic   = google_pubsub_topic.dispatch.name
  role    = "roles/pubsub.publisher"
  member  = module.github_webhook.service_account_member
}

resource "google_pubsub_topic" "dispatch_dead_letter" {
  #checkov:skip=CKV_GCP_83:Dead-lettered webhook triggers; Google-managed encryption. Set kms_key_name here if your organisation requires CMEK.
  project = var.project_id
  name    = "${var.name_prefix}-dispatch-dead-letter"
  labels  = local.labels

  depends_on = [google_project_service.main]
}

resource "google_pubsub_subscription" "dispatch" {
  count = var.deploy_services ? 1 : 0

  project = var.project_id
  name    = "${var.name_prefix}-dispatch-to-github-webhook"
  topic   = google_pubsub_topic.dispatch.id
  labels  = local.labels

  # Staging a large repository can take minutes: the longest ack deadline,
  # matched by the service's request timeout.
  ack_deadline_seconds       = 600
  message_retention_duration = "86400s"

  push_config {
    push_endpoint = "${local.service_urls.github_webhook}/dispatch"
    oidc_token {
      service_account_email = google_service_account.push.email
      audience              = local.service_urls.github_webhook
    }
  }

  retry_policy {
    minimum_backoff = "10s"
    maximum_backoff = "600s"
  }

  dead_letter_policy {
    dead_letter_topic     = google_pubsub_topic.dispatch_dead_letter.id
    max_delivery_attempts = var.max_delivery_attempts
  }

  expiration_policy {
    ttl = ""
  }

  depends_on = [module.github_webhook]
}

resource "google_pubsub_subscription" "dispatch_dead_letter" {
  project = var.project_id
  name    = "${var.name_prefix}-dispatch-dead-letter"
  topic   = google_pubsub_topic.dispatch_dead_letter.id
  labels  = local.labels

  message_retention_duration = "604800s"

  expiration_policy {
    ttl = ""
  }
}

# Dead-lettering: the Pub/Sub service agent publishes to the dead-letter
# topics and acknowledges on the source subscriptions.
locals {
  dead_letter_topics = merge(
    { dispatch = google_pubsub_topic.dispatch_dead_letter.name },
    var.finalize_delivery == "pubsub" ? { finalize = google_pubsub_topic.finalize_dead_letter[0].name } : {},
  )
  dead_letter_sources = merge(
    var.deploy_services ? { dispatch = google_pubsub_subscription.dispatch[0].name } : {},
    var.finalize_delivery == "pubsub" && var.deploy_services ? { finalize = google_pubsub_subscription.finalize[0].name } : {},
  )
}

resource "google_pubsub_topic_iam_member" "dead_letter_publisher" {
  for_each = local.dead_letter_topics

  project = var.project_id
  topic   = each.value
  role    = "roles/pubsub.publisher"
  member  = local.pubsub_agent
}

resource "google_pubsub_subscription_iam_member" "dead_letter_subscriber" {
  for_each = local.dead_letter_sources

  project      = var.project_id
  subscription = each.value
  role         = "roles/pubsub.subscriber"
  member       = local.pubsub_agent
}
