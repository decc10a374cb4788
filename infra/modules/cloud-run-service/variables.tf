variable "project_id" {
  description = "The project that holds the service and its service account."
  type        = string
}

variable "region" {
  description = "The Cloud Run region."
  type        = string
}

variable "name" {
  description = "The Cloud Run service's name; also the account id of its service account, so 6 to 30 characters."
  type        = string

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{4,28}[a-z0-9]$", var.name))
    error_message = "name must be 6 to 30 characters: lowercase letters, digits and hyphens, starting with a letter."
  }
}

variable "description" {
  description = "What the service does, shown in the console and on its service account."
  type        = string
}

variable "image" {
  description = "The container image URI (a tag or a digest)."
  type        = string
}

variable "env" {
  description = <<-EOT
    Plain environment variables, name => value. Every variable the service's
    configuration reads is listed here (tests/tests/integration/infra.rs holds
    the list to nbci_shared::config::variables_of); an empty value leaves the
    variable unset in the container, so the service's own default applies.
  EOT
  type        = map(string)
  default     = {}
}

variable "secret_env" {
  description = "Environment variables read from Secret Manager when an instance starts, name => {secret = secret id, version = a version number or \"latest\"}. The service account gets secretAccessor on exactly these secrets."
  type = map(object({
    secret  = string
    version = optional(string, "latest")
  }))
  default = {}
}

variable "create_service" {
  description = "Whether to create the Cloud Run service. false creates only the service account, so that permissions can be granted and secrets filled before the first revision starts."
  type        = bool
  default     = true
}

variable "cpu" {
  description = "vCPUs per instance (\"1\", \"2\", ... or a fraction such as \"0.5\" with cpu_idle true)."
  type        = string
  default     = "1"
}

variable "memory" {
  description = "Memory per instance, e.g. \"512Mi\" or \"1Gi\"."
  type        = string
  default     = "512Mi"

  validation {
    condition     = can(regex("^[0-9]+(Mi|Gi)$", var.memory))
    error_message = "memory must be a whole number of Mi or Gi, e.g. 512Mi."
  }
}

variable "min_instances" {
  description = "Instances kept warm; 0 scales to zero when idle (no cost at rest)."
  type        = number
  default     = 0

  validation {
    condition     = var.min_instances >= 0
    error_message = "min_instances must be 0 or more."
  }
}

variable "max_instances" {
  description = "Upper bound on instances, which bounds cost under a burst of events."
  type        = number
  default     = 10

  validation {
    condition     = var.max_instances >= 1
    error_message = "max_instances must be at least 1."
  }
}

variable "concurrency" {
  description = "Requests one instance serves at once."
  type        = number
  default     = 80
}

variable "timeout" {
  description = "Longest time a request may take, e.g. \"300s\" (at most 3600s)."
  type        = string
  default     = "300s"

  validation {
    condition     = can(regex("^[0-9]+s$", var.timeout))
    error_message = "timeout must be a number of seconds followed by s, e.g. 300s."
  }
}

variable "cpu_idle" {
  description = "true: CPU only while a request is being answered (request-based billing). false: CPU for the instance's whole life, for services whose work continues after they answer."
  type        = bool
  default     = true
}

variable "ingress" {
  description = "Who may reach the service over the network: INGRESS_TRAFFIC_ALL, INGRESS_TRAFFIC_INTERNAL_ONLY (the project's VPC and Google services such as Pub/Sub, Eventarc and Cloud Scheduler of this project) or INGRESS_TRAFFIC_INTERNAL_LOAD_BALANCER."
  type        = string
  default     = "INGRESS_TRAFFIC_INTERNAL_ONLY"

  validation {
    condition     = contains(["INGRESS_TRAFFIC_ALL", "INGRESS_TRAFFIC_INTERNAL_ONLY", "INGRESS_TRAFFIC_INTERNAL_LOAD_BALANCER"], var.ingress)
    error_message = "ingress must be INGRESS_TRAFFIC_ALL, INGRESS_TRAFFIC_INTERNAL_ONLY or INGRESS_TRAFFIC_INTERNAL_LOAD_BALANCER."
  }
}

variable "public" {
  description = "Whether anyone on the internet may invoke the service (allUsers gets roles/run.invoker). Only for a service that authenticates every request itself, such as a webhook that checks a signature."
  type        = bool
  default     = false
}

variable "invokers" {
  description = "Identities that get roles/run.invoker, i.e. whose Google-signed ID tokens Cloud Run accepts: a static key => an IAM member (serviceAccount:x@p.iam.gserviceaccount.com). Static keys keep for_each plannable before the accounts exist."
  type        = map(string)
  default     = {}
}

variable "deletion_protection" {
  description = "Whether Terraform refuses to delete the service."
  type        = bool
  default     = true
}

variable "labels" {
  description = "Labels for the service and its revisions."
  type        = map(string)
  default     = {}
}
