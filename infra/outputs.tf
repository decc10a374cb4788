output "github_webhook_url" {
  description = "The GitHub App's webhook URL: paste it into the App's settings (infra/github-app/register.py puts it in the manifest)."
  value       = "${local.service_urls.github_webhook}/github"
}

output "service_urls" {
  description = "Each service's deterministic run.app URL, known before the services exist: github_webhook (public), gcs_events and scheduler (internal, ID tokens only)."
  value       = local.service_urls
}

output "bucket" {
  description = "The bucket (NBCI_BUCKET): src/ sources, ci/ check runs, pipelines/ pipeline runs, deliveries/ markers."
  value       = google_storage_bucket.main.name
}

output "registry" {
  description = "The Artifact Registry repository images are pushed to (make images REGISTRY=...)."
  value       = local.registry
}

output "images" {
  description = "The image URIs this deployment runs: the three services, the runner (NBCI_RUNNER_IMAGE) and its GPU variant."
  value       = local.images
}

output "runner_service_account" {
  description = "The notebook jobs' service account (NBCI_RUNNER_SERVICE_ACCOUNT)."
  value       = google_service_account.runner.email
}

output "service_accounts" {
  description = "Each service's own service account."
  value = {
    github_webhook = module.github_webhook.service_account_email
    gcs_events     = module.gcs_events.service_account_email
    scheduler      = module.scheduler.service_account_email
  }
}

output "secrets" {
  description = "Names of the Secret Manager secrets to fill with gcloud secrets versions add (their values are never in Terraform)."
  value = {
    webhook_secret  = google_secret_manager_secret.webhook_secret.secret_id
    app_private_key = google_secret_manager_secret.app_private_key.secret_id
  }
}

output "dispatch_topic" {
  description = "The topic github-webhook hands its work to (NBCI_DISPATCH_TOPIC)."
  value       = google_pubsub_topic.dispatch.id
}

output "dead_letter_subscriptions" {
  description = "Pull subscriptions that keep messages no delivery attempt could handle; inspect with gcloud pubsub subscriptions pull."
  value = merge(
    { dispatch = google_pubsub_subscription.dispatch_dead_letter.id },
    var.finalize_delivery == "pubsub" ? { finalize = google_pubsub_subscription.finalize_dead_letter[0].id } : {},
  )
}
