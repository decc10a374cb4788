variable "project_id" {
  description = "The Google Cloud project to deploy into (its id, not its number)."
  type        = string

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{4,28}[a-z0-9]$", var.project_id))
    error_message = "project_id must be a project id: 6 to 30 lowercase letters, digits or hyphens, starting with a letter."
  }
}

variable "region" {
  description = "The region of the services, the bucket, the registry and the notebook jobs, e.g. us-central1 (it must offer Cloud Run and Vertex AI custom training)."
  type        = string
  default     = "us-central1"

  validation {
    condition     = can(regex("^[a-z]+-[a-z]+[0-9]+$", var.region))
    error_message = "region must be a Google Cloud region such as us-central1 or europe-west4."
  }
}

variable "name_prefix" {
  description = "Prefix of every resource name (services nbci-github-webhook, nbci-gcs-events, nbci-scheduler, ...). Short, so the services keep their deterministic URLs."
  type        = string
  default     = "nbci"

  validation {
    condition     = can(regex("^[a-z]([a-z0-9-]{0,8}[a-z0-9])?$", var.name_prefix))
    error_message = "name_prefix must be 1 to 10 lowercase letters, digits or hyphens, starting with a letter and not ending with a hyphen."
  }
}

variable "deploy_services" {
  description = "false for the first apply: everything but the Cloud Run services and what delivers to them, so the images can be pushed and the secrets filled before any revision starts. Then true (the default)."
  type        = bool
  default     = true
}

variable "bucket_name" {
  description = "The bucket for sources, check runs, pipeline runs and delivery markers; null names it PROJECT_ID-PREFIX."
  type        = string
  default     = null

  validation {
    condition     = var.bucket_name == null || can(regex("^[a-z0-9][a-z0-9_-]{1,61}[a-z0-9]$", var.bucket_name))
    error_message = "bucket_name must be 3 to 63 lowercase letters, digits, hyphens or underscores, starting and ending with a letter or digit (no dots)."
  }
}

variable "bucket_location" {
  description = "Location of the bucket; null puts it in var.region (the jobs and services run there, so no cross-region transfer)."
  type        = string
  default     = null
}

variable "ci_retention_days" {
  description = "Days after which CI artifacts (ci/: executed notebooks, results, job records) and staged sources (src/) are deleted."
  type        = number
  default     = 30

  validation {
    condition     = var.ci_retention_days >= 1
    error_message = "ci_retention_days must be at least 1."
  }
}

variable "delivery_marker_retention_days" {
  description = "Days after which webhook delivery dedupe markers (deliveries/) are deleted. GitHub redelivers for a few days at most."
  type        = number
  default     = 7

  validation {
    condition     = var.delivery_marker_retention_days >= 1
    error_message = "delivery_marker_retention_days must be at least 1."
  }
}

variable "noncurrent_version_retention_days" {
  description = "Days an overwritten or deleted object version is kept (versioning is on, so state files can be recovered)."
  type        = number
  default     = 7

  validation {
    condition     = var.noncurrent_version_retention_days >= 1
    error_message = "noncurrent_version_retention_days must be at least 1."
  }
}

variable "image_tag" {
  description = "Tag of the images in this deployment's registry (make images pushes the git commit's short hash)."
  type        = string
  default     = "latest"

  validation {
    condition     = can(regex("^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$", var.image_tag))
    error_message = "image_tag must be a Docker tag: up to 128 letters, digits, underscores, periods or hyphens."
  }
}

variable "images" {
  description = "Full image URIs that replace the default REGISTRY/NAME:image_tag, e.g. to deploy by digest. Unset ones use the registry."
  type = object({
    github_webhook = optional(string)
    gcs_events     = optional(string)
    scheduler      = optional(string)
    runner         = optional(string)
    runner_gpu     = optional(string)
  })
  default = {}

  validation {
    condition = alltrue([
      for uri in values(var.images) :
      uri == null || can(regex("^[a-z0-9.-]+(:[0-9]+)?(/[a-z0-9._-]+)+(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}|@sha256:[a-f0-9]{64})$", uri))
    ])
    error_message = "Each image must be a full URI with a tag or digest, e.g. us-central1-docker.pkg.dev/PROJECT/nbci/runner:v1 or ...@sha256:<64 hex digits>."
  }
}

variable "executor" {
  description = "Where notebook jobs run: vertex (Vertex AI CustomJob) or ai-platform (the legacy ml.googleapis.com jobs API, shut down by Google on 2025-01-31; for API-compatible endpoints, set ml_endpoint)."
  type        = string
  default     = "vertex"

  validation {
    condition     = contains(["vertex", "ai-platform"], var.executor)
    error_message = "executor must be vertex or ai-platform."
  }
}

variable "ai_platform_deployments" {
  description = "Whether pipelines deploy models with AI Platform versions.create (grants roles/ml.developer and enables ml.googleapis.com). Vertex AI deployments need nothing extra."
  type        = bool
  default     = false
}

variable "vertex_endpoint" {
  description = "Vertex AI API root for jobs and model deployments; empty uses https://REGION-aiplatform.googleapis.com."
  type        = string
  default     = ""

  validation {
    condition     = var.vertex_endpoint == "" || can(regex("^https?://[^/?#]+(/[^?#]*)?$", var.vertex_endpoint))
    error_message = "vertex_endpoint must be empty or an http(s) URL without a query."
  }
}

variable "ml_endpoint" {
  description = "AI Platform (ml v1) API root; empty uses https://ml.googleapis.com."
  type        = string
  default     = ""

  validation {
    condition     = var.ml_endpoint == "" || can(regex("^https?://[^/?#]+(/[^?#]*)?$", var.ml_endpoint))
    error_message = "ml_endpoint must be empty or an http(s) URL without a query."
  }
}

variable "finalize_delivery" {
  description = "How GCS finalize events reach gcs-events: pubsub (a bucket notification to a topic with an authenticated push subscription, a result.json prefix filter and a dead-letter topic) or eventarc (an Eventarc trigger for google.cloud.storage.object.v1.finalized)."
  type        = string
  default     = "pubsub"

  validation {
    condition     = contains(["pubsub", "eventarc"], var.finalize_delivery)
    error_message = "finalize_delivery must be pubsub or eventarc."
  }
}

variable "max_delivery_attempts" {
  description = "Pub/Sub deliveries of one message before it goes to the dead-letter topic (5 to 100)."
  type        = number
  default     = 10

  validation {
    condition     = var.max_delivery_attempts >= 5 && var.max_delivery_attempts <= 100
    error_message = "max_delivery_attempts must be between 5 and 100."
  }
}

variable "github_app_id" {
  description = "The GitHub App's id (or client id), shown on the App's settings page after it is registered. Not a secret."
  type        = string
  default     = ""

  validation {
    condition     = var.github_app_id == "" || can(regex("^([0-9]+|Iv[0-9A-Za-z.]+)$", var.github_app_id))
    error_message = "github_app_id must be the App's numeric id or its client id (Iv...)."
  }
}

variable "secret_versions" {
  description = "Which version of each secret the services read: \"latest\" (read when an instance starts), or a version number, so that a rotation is one reviewed apply that starts new revisions (docs/deploy.md, Rotating secrets)."
  type = object({
    webhook_secret  = optional(string, "latest")
    app_private_key = optional(string, "latest")
  })
  default = {}

  validation {
    condition     = alltrue([for version in values(var.secret_versions) : can(regex("^(latest|[1-9][0-9]*)$", version))])
    error_message = "Each secret version must be \"latest\" or a version number."
  }
}

variable "github_api_url" {
  description = "GitHub's REST API root; GitHub Enterprise Server: https://HOST/api/v3."
  type        = string
  default     = "https://api.github.com"

  validation {
    condition     = can(regex("^https?://[^/?#]+(/[^?#]*)?$", var.github_api_url))
    error_message = "github_api_url must be an http(s) URL without a query."
  }
}

variable "public_url" {
  description = "Where check runs' details links point (the github-webhook service serves executed notebooks); null uses the service's run.app URL. Set it when a custom domain fronts the webhook."
  type        = string
  default     = null

  validation {
    condition     = var.public_url == null || can(regex("^https://[^/?#]+$", var.public_url))
    error_message = "public_url must be https://HOST with no path."
  }
}

variable "max_notebooks" {
  description = "Notebooks checked per commit; past it one neutral check says so."
  type        = number
  default     = 50

  validation {
    condition     = var.max_notebooks >= 1
    error_message = "max_notebooks must be at least 1."
  }
}

variable "job_timeout" {
  description = "Whole-notebook limit of jobs whose notebook sets none (metadata.nbci.timeout), e.g. 1h or 90m."
  type        = string
  default     = "1h"

  validation {
    condition     = can(regex("^[0-9]+(s|m|h)$", var.job_timeout))
    error_message = "job_timeout must be a number followed by s, m or h, e.g. 1h."
  }
}

variable "lost_job_grace" {
  description = "How long past its timeout a job may run before the scheduler cancels it and times out its check, e.g. 10m."
  type        = string
  default     = "10m"

  validation {
    condition     = can(regex("^[0-9]+(s|m|h)$", var.lost_job_grace))
    error_message = "lost_job_grace must be a number followed by s, m or h, e.g. 10m."
  }
}

variable "retry_max" {
  description = "Longest wait between attempts of a step that failed transiently (GitHub down), e.g. 5m."
  type        = string
  default     = "5m"

  validation {
    condition     = can(regex("^[0-9]+(s|m|h)$", var.retry_max))
    error_message = "retry_max must be a number followed by s, m or h, e.g. 5m."
  }
}

variable "log_level" {
  description = "RUST_LOG of the services (tracing's EnvFilter syntax), e.g. info or info,nbci_shared=debug."
  type        = string
  default     = "info"
}

variable "tick_schedule" {
  description = "Cron schedule of the scheduler's POST /tick (start due pipeline runs, reap lost jobs, poll deployments)."
  type        = string
  default     = "* * * * *"

  validation {
    condition     = can(regex("^\\S+( \\S+){4}$", var.tick_schedule))
    error_message = "tick_schedule must be a five-field cron expression, e.g. \"* * * * *\"."
  }
}

variable "pipeline_schedules" {
  description = <<-EOT
    One Cloud Scheduler job per scheduled pipeline: pipeline name (as in the
    repository's nbci.yaml) => {repository = "owner/name", schedule = cron,
    time_zone}. Each job posts {"pipeline": NAME, "repository": REPO} to the
    scheduler's /tick with an ID token. Copy each pipeline's `schedule` from
    nbci.yaml here.
  EOT
  type = map(object({
    repository = string
    schedule   = string
    time_zone  = optional(string, "Etc/UTC")
  }))
  default = {}

  validation {
    condition     = alltrue([for name in keys(var.pipeline_schedules) : can(regex("^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$", name))])
    error_message = "Pipeline names must be 1 to 63 letters, digits, hyphens or underscores."
  }

  validation {
    condition     = alltrue([for p in values(var.pipeline_schedules) : can(regex("^\\S+( \\S+){4}$", p.schedule))])
    error_message = "Each pipeline schedule must be a five-field cron expression, e.g. \"0 3 * * *\"."
  }

  validation {
    condition     = alltrue([for p in values(var.pipeline_schedules) : can(regex("^[A-Za-z0-9-]+/[A-Za-z0-9._-]+$", p.repository))])
    error_message = "Each pipeline's repository must be owner/name."
  }
}

variable "services" {
  description = "Sizing of the three services. github-webhook keeps CPU after answering (cpu_idle false) because it finishes its work in the background."
  type = object({
    github_webhook = optional(object({
      cpu           = optional(string, "1")
      memory        = optional(string, "1Gi")
      min_instances = optional(number, 0)
      max_instances = optional(number, 10)
      concurrency   = optional(number, 80)
    }), {})
    gcs_events = optional(object({
      cpu           = optional(string, "1")
      memory        = optional(string, "512Mi")
      min_instances = optional(number, 0)
      max_instances = optional(number, 10)
      concurrency   = optional(number, 80)
    }), {})
    scheduler = optional(object({
      cpu           = optional(string, "1")
      memory        = optional(string, "512Mi")
      min_instances = optional(number, 0)
      max_instances = optional(number, 1)
      concurrency   = optional(number, 10)
    }), {})
  })
  default = {}
}

variable "deletion_protection" {
  description = "Whether Terraform refuses to delete the services (set false before terraform destroy)."
  type        = bool
  default     = true
}

variable "labels" {
  description = "Labels added to every labelled resource (app = nbci is always set)."
  type        = map(string)
  default     = {}
}
