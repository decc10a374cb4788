# Cloud Scheduler calls the scheduler service's POST /tick with a Google-signed
# ID token of its own account: Cloud Run admits it (roles/run.invoker) and the
# service checks it again (NBCI_OIDC_AUDIENCE, NBCI_OIDC_EMAIL).

resource "google_service_account" "ticks" {
  project      = var.project_id
  account_id   = "${var.name_prefix}-ticks"
  display_name = "nbci scheduler ticks"
  description  = "Signs the ID tokens of Cloud Scheduler's calls to the nbci scheduler service."
}

locals {
  tick_uri = "${local.service_urls.scheduler}/tick"
}

# Every minute: start due pipeline runs, complete lost jobs, poll deployments.
resource "google_cloud_scheduler_job" "tick" {
  count = var.deploy_services ? 1 : 0

  project          = var.project_id
  region           = var.region
  name             = "${var.name_prefix}-tick"
  description      = "POST /tick on the nbci scheduler service."
  schedule         = var.tick_schedule
  time_zone        = "Etc/UTC"
  attempt_deadline = "300s"

  # A missed tick is made up by the next one.
  retry_config {
    retry_count = 0
  }

  http_target {
    http_method = "POST"
    uri         = local.tick_uri
    headers = {
      "Content-Type" = "application/json"
    }
    body = base64encode("{}")

    oidc_token {
      service_account_email = google_service_account.ticks.email
      audience              = local.service_urls.scheduler
    }
  }

  depends_on = [module.scheduler]
}

# One job per scheduled pipeline: starts that pipeline at its branch's head.
resource "google_cloud_scheduler_job" "pipeline" {
  for_each = var.deploy_services ? var.pipeline_schedules : {}

  project          = var.project_id
  region           = var.region
  name             = "${var.name_prefix}-pipeline-${each.key}"
  description      = "Starts pipeline ${each.key} of ${each.value.repository} (POST /tick on the nbci scheduler service)."
  schedule         = each.value.schedule
  time_zone        = each.value.time_zone
  attempt_deadline = "300s"

  retry_config {
    retry_count          = 3
    min_backoff_duration = "30s"
  }

  http_target {
    http_method = "POST"
    uri         = local.tick_uri
    headers = {
      "Content-Type" = "application/json"
    }
    body = base64encode(jsonencode({
      pipeline   = each.key
      repository = each.value.repository
    }))

    oidc_token {
      service_account_email = google_service_account.ticks.email
      audience              = local.service_urls.scheduler
    }
  }

  depends_on = [module.scheduler]
}
