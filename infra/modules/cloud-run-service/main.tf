/**
 * One Cloud Run (v2) service with its own service account.
 *
 * The account is created even when the service is not (create_service =
 * false), so the caller can grant it access to the bucket, topics and
 * secrets before the first revision starts and reads them.
 */

resource "google_service_account" "main" {
  project      = var.project_id
  account_id   = var.name
  display_name = "nbci ${var.name}"
  description  = "Identity of the ${var.name} Cloud Run service: ${var.description}"
}

# The service reads these secrets as environment variables, so its identity
# may read them; no other identity gets access through this module.
resource "google_secret_manager_secret_iam_member" "accessor" {
  for_each = var.secret_env

  project   = var.project_id
  secret_id = each.value.secret
  role      = "roles/secretmanager.secretAccessor"
  member    = google_service_account.main.member
}

resource "google_cloud_run_v2_service" "main" {
  count = var.create_service ? 1 : 0

  project             = var.project_id
  location            = var.region
  name                = var.name
  description         = var.description
  ingress             = var.ingress
  labels              = var.labels
  deletion_protection = var.deletion_protection

  template {
    service_account                  = google_service_account.main.email
    timeout                          = var.timeout
    max_instance_request_concurrency = var.concurrency
    labels                           = var.labels

    scaling {
      min_instance_count = var.min_instances
      max_instance_count = var.max_instances
    }

    containers {
      image = var.image

      ports {
        container_port = 8080
      }

      resources {
        limits = {
          cpu    = var.cpu
          memory = var.memory
        }
        cpu_idle          = var.cpu_idle
        startup_cpu_boost = true
      }

      # An empty value means "not set": the variable is declared (and checked
      # against the service's configuration) but the service's default applies.
      dynamic "env" {
        for_each = { for name, value in var.env : name => value if value != "" }
        content {
          name  = env.key
          value = env.value
        }
      }

      dynamic "env" {
        for_each = var.secret_env
        content {
          name = env.key
          value_source {
            secret_key_ref {
              secret  = env.value.secret
              version = env.value.version
            }
          }
        }
      }

      startup_probe {
        http_get {
          path = "/healthz"
        }
        period_seconds    = 2
        timeout_seconds   = 1
        failure_threshold = 15
      }

      liveness_probe {
        http_get {
          path = "/healthz"
        }
        period_seconds = 30
      }
    }
  }

  # A revision cannot start before its identity may read its secrets.
  depends_on = [google_secret_manager_secret_iam_member.accessor]
}

resource "google_cloud_run_v2_service_iam_member" "public" {
  count = var.create_service && var.public ? 1 : 0

  project  = var.project_id
  location = var.region
  name     = google_cloud_run_v2_service.main[0].name
  role     = "roles/run.invoker"
  member   = "allUsers"
}

resource "google_cloud_run_v2_service_iam_member" "invoker" {
  for_each = var.create_service ? var.invokers : {}

  project  = var.project_id
  location = var.region
  name     = google_cloud_run_v2_service.main[0].name
  role     = "roles/run.invoker"
  member   = each.value
}
