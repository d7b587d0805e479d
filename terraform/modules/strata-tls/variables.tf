variable "name" {
  description = "Cluster name, in the certificates' common names."
  type        = string
}

variable "dns_names" {
  description = "DNS names the agent certificate is valid for: every name clients use for an agent (load balancer, advertised names, localhost for health checks)."
  type        = list(string)
}

variable "ip_addresses" {
  description = "IP addresses the agent certificate is valid for."
  type        = list(string)
  default     = []
}

variable "validity_hours" {
  description = "Validity of the agent certificate, hours (the CA's is five times longer)."
  type        = number
  default     = 17520
}
