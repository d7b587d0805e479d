# A private CA and one agent certificate signed by it, for the agents' TLS. The agents
# present the certificate to each other too (mutual TLS), so it allows client
# authentication as well as server authentication. The private keys are in the terraform
# state: keep the state encrypted.

resource "tls_private_key" "ca" {
  algorithm   = "ECDSA"
  ecdsa_curve = "P256"
}

resource "tls_self_signed_cert" "ca" {
  private_key_pem       = tls_private_key.ca.private_key_pem
  is_ca_certificate     = true
  validity_period_hours = var.validity_hours * 5
  allowed_uses          = ["cert_signing", "crl_signing", "digital_signature"]
  subject {
    common_name  = "Strata ${var.name} CA"
    organization = "Strata"
  }
}

resource "tls_private_key" "agent" {
  algorithm   = "ECDSA"
  ecdsa_curve = "P256"
}

resource "tls_cert_request" "agent" {
  private_key_pem = tls_private_key.agent.private_key_pem
  dns_names       = var.dns_names
  ip_addresses    = var.ip_addresses
  subject {
    common_name  = "strata-${var.name}-agent"
    organization = "Strata"
  }
}

resource "tls_locally_signed_cert" "agent" {
  cert_request_pem      = tls_cert_request.agent.cert_request_pem
  ca_private_key_pem    = tls_private_key.ca.private_key_pem
  ca_cert_pem           = tls_self_signed_cert.ca.cert_pem
  validity_period_hours = var.validity_hours
  early_renewal_hours   = 720
  allowed_uses          = ["digital_signature", "key_encipherment", "server_auth", "client_auth"]
}
