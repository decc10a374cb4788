/**
 * notebook-cicd on Google Cloud: three Cloud Run services (github-webhook,
 * gcs-events, scheduler), one bucket, notebook jobs on Vertex AI.
 *
 * Files by concern:
 *   apis.tf      the APIs this deployment uses
 *   storage.tf   the bucket (layout: ci/, src/, pipelines/, deliveries/)
 *   pubsub.tf    finalize notifications -> gcs-events; the dispatch topic -> github-webhook
 *   eventarc.tf  the Eventarc alternative for finalize events
 *   scheduler.tf the every-minute tick and one job per pipeline schedule
 *   secrets.tf   the GitHub App's webhook secret and private key (values added outside Terraform)
 *   iam.tf       the notebook jobs' (runner's) account and every project or bucket grant
 *   registry.tf  the Artifact Registry repository for the four images
 *   services.tf  the three services, with exactly the environment their configuration reads
 */

provider "google" {
  project = var.project_id
  region  = var.region
}

provider "google-beta" {
  project = var.project_id
  region  = var.region
}

data "google_project" "main" {
  project_id = var.project_id
}

locals {
  service_names = {
    github_webhook = "${var.name_prefix}-github-webhook"
    gcs_events     = "${var.name_prefix}-gcs-events"
    scheduler      = "${var.name_prefix}-scheduler"
  }

  # Cloud Run's deterministic URLs (https://NAME-PROJECT_NUMBER.REGION.run.app):
  # known before the services exist, so a service can be told its own address
  # (details links, the audience of the ID tokens it receives) without a cycle,
  # and the webhook URL can be given to GitHub before the first deployment.
  service_urls = {
    for key, name in local.service_names :
    key => "https://${name}-${data.google_project.main.number}.${var.region}.run.app"
  }

  bucket_name = coalesce(var.bucket_name, "${var.project_id}-${var.name_prefix}")

  registry = "${var.region}-docker.pkg.dev/${var.project_id}/${google_artifact_registry_repository.main.repository_id}"
  images = {
    github_webhook = coalesce(var.images.github_webhook, "${local.registry}/github-webhook:${var.image_tag}")
    gcs_events     = coalesce(var.images.gcs_events, "${local.registry}/gcs-events:${var.image_tag}")
    scheduler      = coalesce(var.images.scheduler, "${local.registry}/scheduler:${var.image_tag}")
    runner         = coalesce(var.images.runner, "${local.registry}/runner:${var.image_tag}")
    runner_gpu     = coalesce(var.images.runner_gpu, "${local.registry}/runner-gpu:${var.image_tag}")
  }

  public_url = coalesce(var.public_url, local.service_urls.github_webhook)

  labels = merge({ app = "nbci" }, var.labels)
}
