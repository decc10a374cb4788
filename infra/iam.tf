# Who may do what. No basic roles, no project-wide storage roles; grants on
# the bucket, the topics, the secrets and the runner's account where the
# resource allows it, on the project only where the permission exists
# nowhere else (Vertex AI jobs, the Eventarc receiver).

locals {
  uses_ai_platform = var.executor == "ai-platform" || var.ai_platform_deployments

  # The three services, by key, as IAM members.
  service_members = {
    github_webhook = module.github_webhook.service_account_member
    gcs_events     = module.gcs_events.service_account_member
    scheduler      = module.scheduler.service_account_member
  }

  object_prefix = "projects/_/buckets/${google_storage_bucket.main.name}/objects"
}

# --- the notebook jobs ----------------------------------------------------------

# The identity of every notebook job (Vertex AI CustomJob serviceAccount,
# NBCI_RUNNER_SERVICE_ACCOUNT). Jobs run the repositories' code, so this
# account can read sources and write results and nothing else: no GitHub
# credentials, no secrets, no other prefix, no project role.
resource "google_service_account" "runner" {
  project      = var.project_id
  account_id   = "${var.name_prefix}-runner"
  display_name = "nbci notebook jobs"
  description  = "Identity of the notebook jobs: reads src/, reads and writes its job's ci/ or pipelines/ folder."
}

# Read the staged sources. IAM conditions on object names need uniform
# bucket-level access (set on the bucket). The runner never lists: it reads
# the keys its job.json names.
resource "google_storage_bucket_iam_member" "runner_sources" {
  bucket = google_storage_bucket.main.name
  role   = "roles/storage.objectViewer"
  member = google_service_account.runner.member

  condition {
    title       = "sources only"
    description = "Staged repository tarballs under src/."
    expression  = "resource.name.startsWith(\"${local.object_prefix}/src/\")"
  }
}

# Read job.json and earlier steps' outputs, write output.ipynb, output.html
# and result.json (objectUser: a retried job overwrites its own files, which
# needs delete). This is as narrow as a static grant gets: a job's own folder
# is only known when it is submitted, so a notebook can write any run's files
# under ci/ and pipelines/. Install the App only on repositories whose
# notebooks you trust with that (docs/deploy.md, "Trust").
resource "google_storage_bucket_iam_member" "runner_results" {
  bucket = google_storage_bucket.main.name
  role   = "roles/storage.objectUser"
  member = google_service_account.runner.member

  condition {
    title       = "run folders only"
    description = "Job records and results under ci/ and pipelines/."
    expression  = "resource.name.startsWith(\"${local.object_prefix}/ci/\") || resource.name.startsWith(\"${local.object_prefix}/pipelines/\")"
  }
}

# The services submit jobs that run as the runner: they may act as it
# (iam.serviceAccounts.actAs), on this one account only.
resource "google_service_account_iam_member" "runner_user" {
  for_each = local.service_members

  service_account_id = google_service_account.runner.name
  role               = "roles/iam.serviceAccountUser"
  member             = each.value
}

# --- the services ------------------------------------------------------------

# The services own the bucket's contents: they stage sources, claim
# deliveries, list and rewrite check and pipeline state (generation-
# conditional writes need delete to overwrite). Bucket-level objectUser is the
# narrowest predefined role that includes list, which IAM checks on the
# bucket, not on a prefix.
resource "google_storage_bucket_iam_member" "service_objects" {
  for_each = local.service_members

  bucket = google_storage_bucket.main.name
  role   = "roles/storage.objectUser"
  member = each.value
}

# Submit, read and cancel Vertex AI custom jobs; upload models and deploy
# them to endpoints. Vertex AI has no per-job IAM: the project is the
# narrowest resource.
resource "google_project_iam_member" "service_vertex" {
  for_each = local.service_members

  project = var.project_id
  role    = "roles/aiplatform.user"
  member  = each.value
}

# The legacy AI Platform jobs and versions API, when used.
resource "google_project_iam_member" "service_ml" {
  for_each = local.uses_ai_platform ? local.service_members : {}

  project = var.project_id
  role    = "roles/ml.developer"
  member  = each.value
}
