# The GitHub App's secrets. Terraform creates the secrets and never their
# values: nothing secret is in a variable, an output or the state. After the
# App is registered, add a version to each (docs/deploy.md):
#   printf %s "$WEBHOOK_SECRET" | gcloud secrets versions add nbci-github-webhook-secret --data-file=-
#   gcloud secrets versions add nbci-github-app-private-key --data-file=app.private-key.pem
# Each is read only by the services that need it: the module grants
# secretAccessor to a service's own account for the secrets in its secret_env.

resource "google_secret_manager_secret" "webhook_secret" {
  project   = var.project_id
  secret_id = "${var.name_prefix}-github-webhook-secret"
  labels    = local.labels

  replication {
    auto {}
  }

  depends_on = [google_project_service.main]
}

resource "google_secret_manager_secret" "app_private_key" {
  project   = var.project_id
  secret_id = "${var.name_prefix}-github-app-private-key"
  labels    = local.labels

  replication {
    auto {}
  }

  depends_on = [google_project_service.main]
}
