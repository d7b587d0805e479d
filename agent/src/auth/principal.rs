//! Who a request comes from: its [`Principal`] (Kafka's `User:<name>`) and the client's
//! address, as one [`Caller`].
//!
//! Where the principal comes from, first match wins:
//! 1. a bearer token of the `principal:token` form (gRPC `authorization`, Kafka SASL);
//! 2. the client certificate's subject, under mutual TLS (`User:CN=alice,O=Example`, in
//!    RFC 2253 order, as Kafka names it);
//! 3. otherwise `User:ANONYMOUS`.
//!
//! Agents call each other as [`Principal::agent`] (with the token derived from the
//! cluster's tokens), a super user; a request an agent forwards for a caller names the
//! caller in [`FORWARDED_PRINCIPAL`], which is believed only from a super user.

use std::sync::Arc;

/// The header a forwarding agent names its caller's principal in.
pub const FORWARDED_PRINCIPAL: &str = "strata-principal";

/// The principal type Strata uses: every principal is a user.
pub const USER: &str = "User:";

/// A principal's name (what follows `User:`): printable ASCII, 1 to 255 characters.
pub const MAX_NAME_LEN: usize = 255;

/// An authenticated identity, `User:<name>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Principal(Arc<str>);

impl Principal {
    /// The user `name`.
    pub fn user(name: &str) -> Self {
        Self(format!("{USER}{name}").into())
    }

    /// Whoever did not authenticate.
    pub fn anonymous() -> Self {
        Self::user("ANONYMOUS")
    }

    /// The agents themselves, calling each other.
    pub fn agent() -> Self {
        Self::user(AGENT_NAME)
    }

    /// `text` as a principal: `User:<name>` or a bare name (taken as a user); `None` if it
    /// is not one (another principal type, or a name that is empty, too long or not
    /// printable ASCII).
    pub fn parse(text: &str) -> Option<Self> {
        let name = match text.split_once(':') {
            Some(("User", name)) => name,
            Some(_) => return None,
            None => text,
        };
        valid_name(name).then(|| Self::user(name))
    }

    /// `User:<name>`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The name, without `User:`.
    pub fn name(&self) -> &str {
        &self.0[USER.len()..]
    }

    /// The principal of a client certificate (DER): its subject in RFC 2253 order
    /// (`CN=alice,OU=data,O=Example`); `None` if it does not parse.
    pub fn from_certificate(der: &[u8]) -> Option<Self> {
        let (_, certificate) = x509_parser::parse_x509_certificate(der).ok()?;
        let registry = x509_parser::objects::oid_registry();
        let rdns: Vec<String> = certificate
            .subject()
            .iter_rdn()
            .map(|rdn| {
                rdn.iter()
                    .map(|attribute| {
                        let oid = attribute.attr_type();
                        let key = x509_parser::objects::oid2abbrev(oid, registry)
                            .map(str::to_string)
                            .unwrap_or_else(|_| oid.to_id_string());
                        let value = attribute.as_str().unwrap_or("#");
                        format!("{key}={value}")
                    })
                    .collect::<Vec<_>>()
                    .join("+")
            })
            .collect();
        let subject: Vec<String> = rdns.into_iter().rev().collect();
        let subject = subject.join(",");
        valid_name(&subject).then(|| Self::user(&subject))
    }
}

impl std::fmt::Display for Principal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The name of [`Principal::agent`]; no token file may name a principal so.
pub const AGENT_NAME: &str = "strata-agent";

/// Whether `name` may name a principal.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name.bytes().all(|b| b.is_ascii_graphic() || b == b' ')
}

/// Who sent a request: the principal and the client's IP address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// Who.
    pub principal: Principal,
    /// From where: the client's IP address (`*` when unknown, as in tests without a
    /// socket).
    pub host: String,
}

impl Caller {
    /// `principal` connecting from `host`.
    pub fn new(principal: Principal, host: impl Into<String>) -> Self {
        Self {
            principal,
            host: host.into(),
        }
    }

    /// An agent's own call (markers, forwarded offsets).
    pub fn agent() -> Self {
        Self::new(Principal::agent(), "*")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_principals() {
        assert_eq!(
            Principal::parse("billing").unwrap().as_str(),
            "User:billing"
        );
        assert_eq!(Principal::parse("User:billing").unwrap().name(), "billing");
        assert_eq!(Principal::parse("User:*").unwrap().as_str(), "User:*");
        assert!(Principal::parse("Group:x").is_none());
        assert!(Principal::parse("").is_none());
        assert!(Principal::parse("User:").is_none());
        assert!(Principal::parse(&"x".repeat(256)).is_none());
        assert!(Principal::parse("tab\there").is_none());
    }

    #[test]
    fn a_certificate_subject_is_a_principal() {
        let mut params = rcgen::CertificateParams::new(vec!["client".to_string()]).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, "Example");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "alice");
        let key = rcgen::KeyPair::generate().unwrap();
        let certificate = params.self_signed(&key).unwrap();
        let principal = Principal::from_certificate(certificate.der()).unwrap();
        assert_eq!(principal.as_str(), "User:CN=alice,O=Example");
        assert!(Principal::from_certificate(b"not a certificate").is_none());
    }
}
