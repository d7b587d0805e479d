output "ca_certificate_pem" {
  description = "The CA certificate: what clients trust (--tls-ca)."
  value       = tls_self_signed_cert.ca.cert_pem
}

output "certificate_pem" {
  description = "The agents' certificate (--tls-cert)."
  value       = tls_locally_signed_cert.agent.cert_pem
}

output "private_key_pem" {
  description = "The agents' private key (--tls-key)."
  value       = tls_private_key.agent.private_key_pem
  sensitive   = true
}
