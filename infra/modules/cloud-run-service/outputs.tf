output "service_account_email" {
  description = "Email of the service's own service account."
  value       = google_service_account.main.email
}

output "service_account_member" {
  description = "The service account as an IAM member (serviceAccount:...), for bindings."
  value       = google_service_account.main.member
}

output "service_name" {
  description = "The Cloud Run service's name."
  value       = var.name
}

output "service_id" {
  description = "projects/{project}/locations/{region}/services/{name}, or null when the service is not created."
  value       = one(google_cloud_run_v2_service.main[*].id)
}

output "uri" {
  description = "The URL Cloud Run reports for the service, or null when the service is not created."
  value       = one(google_cloud_run_v2_service.main[*].uri)
}
