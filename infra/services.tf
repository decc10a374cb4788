# The three Cloud Run services. Each `env` lists exactly the variables the
# service's configuration reads (nbci_shared::config::variables_of; PORT and
# K_SERVICE are set by Cloud Run); tests/tests/integration/infra.rs checks
# that. An empty value leaves a variable unset, so its default applies
# (STORAGE_EMULATOR_HOST is for emulators and is never set here).

locals {
  # What every service needs to run jobs and reach Google and GitHub.
  common_env = {
    RUST_LOG                    = var.log_level
    GOOGLE_CLOUD_PROJECT        = var.project_id
    NBCI_REGION                 = var.region
    NBCI_BUCKET                 = google_storage_bucket.main.name
    STORAGE_EMULATOR_HOST       = ""
    NBCI_EXECUTOR               = var.executor
    NBCI_RUNNER_IMAGE           = local.images.runner
    NBCI_RUNNER_SERVICE_ACCOUNT = google_service_account.runner.email
    NBCI_VERTEX_ENDPOINT        = var.vertex_endpoint
    NBCI_ML_ENDPOINT            = var.ml_endpoint
    NBCI_JOB_TIMEOUT            = var.job_timeout
    NBCI_RETRY_MAX              = var.retry_max
    NBCI_LEASE_TTL              = ""
    GITHUB_APP_ID               = var.github_app_id
    GITHUB_API_URL              = var.github_api_url

    # The HTTP limits against hostile clients keep their defaults (README).
    NBCI_HTTP_MAX_CONNECTIONS = ""
    NBCI_HTTP_HEADER_TIMEOUT  = ""
    NBCI_HTTP_BODY_TIMEOUT    = ""
    NBCI_HTTP_REQUEST_TIMEOUT = ""
    NBCI_HTTP_STALL_TIMEOUT   = ""
    NBCI_HTTP_BODY_MEMORY_MIB = ""
  }

  # Which version of each secret the services read (secrets.tf; rotation in docs/deploy.md).
  secret_refs = {
    webhook_secret = {
      secret  = google_secret_manager_secret.webhook_secret.secret_id
      version = var.secret_versions.webhook_secret
    }
    app_private_key = {
      secret  = google_secret_manager_secret.app_private_key.secret_id
      version = var.secret_versions.app_private_key
    }
  }
}

# The deployment needs the App's id before the services start.
resource "terraform_data" "github_app_id" {
  count = var.deploy_services ? 1 : 0

  lifecycle {
    precondition {
      condition     = var.github_app_id != ""
      error_message = "Set github_app_id (the GitHub App's id, from its settings page) before deploying the services: docs/deploy.md, step 4."
    }
  }
}

# GitHub webhooks (POST /github and /), the Pub/Sub dispatch push
# (POST /dispatch) and executed notebooks for details links (GET /runs/...).
# Public: GitHub cannot present a Google token. Every request authenticates
# itself instead: X-Hub-Signature-256 on webhooks, the push account's ID
# token on /dispatch, a link token on /runs.
module "github_webhook" {
  source = "./modules/cloud-run-service"

  project_id     = var.project_id
  region         = var.region
  name           = local.service_names.github_webhook
  description    = "GitHub App webhooks: check runs and notebook jobs."
  image          = local.images.github_webhook
  create_service = var.deploy_services

  env = merge(local.common_env, {
    NBCI_PUBLIC_URL      = local.public_url
    NBCI_MAX_NOTEBOOKS   = tostring(var.max_notebooks)
    NBCI_DISPATCH_TOPIC  = google_pubsub_topic.dispatch.id
    PUBSUB_EMULATOR_HOST = ""
    NBCI_OIDC_AUDIENCE   = local.service_urls.github_webhook
    NBCI_OIDC_EMAIL      = google_service_account.push.email
    NBCI_OIDC_JWKS_URL   = ""
  })
  secret_env = {
    GITHUB_WEBHOOK_SECRET  = local.secret_refs.webhook_secret
    GITHUB_APP_PRIVATE_KEY = local.secret_refs.app_private_key
  }

  ingress = "INGRESS_TRAFFIC_ALL"
  public  = true

  # It answers GitHub at once and finishes the work afterwards.
  cpu_idle      = false
  timeout       = "600s"
  cpu           = var.services.github_webhook.cpu
  memory        = var.services.github_webhook.memory
  min_instances = var.services.github_webhook.min_instances
  max_instances = var.services.github_webhook.max_instances
  concurrency   = var.services.github_webhook.concurrency

  deletion_protection = var.deletion_protection
  labels              = local.labels

  depends_on = [google_project_service.main, terraform_data.github_app_id]
}

# Finalize events of result.json objects: completes check runs, advances
# pipeline runs (next step, gate, deploy). Reachable only from inside the
# project (Pub/Sub, Eventarc), invocable only by the push account.
module "gcs_events" {
  source = "./modules/cloud-run-service"

  project_id     = var.project_id
  region         = var.region
  name           = local.service_names.gcs_events
  description    = "GCS finalize events: completes check runs, advances pipelines."
  image          = local.images.gcs_events
  create_service = var.deploy_services

  env = local.common_env
  secret_env = {
    GITHUB_APP_PRIVATE_KEY = local.secret_refs.app_private_key
  }

  ingress  = "INGRESS_TRAFFIC_INTERNAL_ONLY"
  invokers = { push = google_service_account.push.member }

  timeout       = "300s"
  cpu           = var.services.gcs_events.cpu
  memory        = var.services.gcs_events.memory
  min_instances = var.services.gcs_events.min_instances
  max_instances = var.services.gcs_events.max_instances
  concurrency   = var.services.gcs_events.concurrency

  deletion_protection = var.deletion_protection
  labels              = local.labels

  depends_on = [google_project_service.main, terraform_data.github_app_id]
}

# Cloud Scheduler ticks: due pipeline runs, lost jobs, pending deployments.
# Reachable only from inside the project, invocable only by the ticks account.
module "scheduler" {
  source = "./modules/cloud-run-service"

  project_id     = var.project_id
  region         = var.region
  name           = local.service_names.scheduler
  description    = "Cloud Scheduler ticks: pipeline runs, lost jobs, deployments."
  image          = local.images.scheduler
  create_service = var.deploy_services

  env = merge(local.common_env, {
    NBCI_LOST_JOB_GRACE = var.lost_job_grace
    # The scheduler is private: Cloud Run's IAM admits only the ticks
    # account's ID token, and passes it on with its signature replaced
    # (SIGNATURE_REMOVED_BY_GOOGLE), which the service could not verify
    # again. So the service checks nothing itself here; github-webhook, which
    # is public, verifies its /dispatch pushes.
    NBCI_OIDC_AUDIENCE = ""
    NBCI_OIDC_EMAIL    = ""
    NBCI_OIDC_JWKS_URL = ""
  })
  secret_env = {
    GITHUB_APP_PRIVATE_KEY = local.secret_refs.app_private_key
  }

  ingress  = "INGRESS_TRAFFIC_INTERNAL_ONLY"
  invokers = { ticks = google_service_account.ticks.member }

  timeout       = "300s"
  cpu           = var.services.scheduler.cpu
  memory        = var.services.scheduler.memory
  min_instances = var.services.scheduler.min_instances
  max_instances = var.services.scheduler.max_instances
  concurrency   = var.services.scheduler.concurrency

  deletion_protection = var.deletion_protection
  labels              = local.labels

  depends_on = [google_project_service.main, terraform_data.github_app_id]
}
