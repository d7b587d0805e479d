//! Who may talk to an agent: TLS on its gRPC listener and bearer-token authentication.
//!
//! - TLS ([`ServerTls`]): the agent serves its certificate; with a client CA it also
//!   requires clients to present a certificate that CA signed (mutual TLS). The agent
//!   reaches other agents (forwarded produce requests, group operations) over TLS too,
//!   trusting the peer CA (or the system's roots) and presenting its own certificate.
//! - Tokens ([`BearerTokens`]): every request must carry `authorization: Bearer <token>`
//!   with one of the configured tokens, or it is refused with UNAUTHENTICATED by an
//!   interceptor that runs before any handler — so a refused request changes nothing. The
//!   standard health service is exempt (load balancers probe it without credentials); it
//!   says only whether the agent serves.
//!
//! Invariant: a forwarded request carries the caller's own token, so the agent it is
//! forwarded to authenticates the caller, not the forwarding agent; every agent of a
//! cluster must therefore accept the same tokens.

use std::sync::Arc;

use subtle::ConstantTimeEq;
use tonic::metadata::{AsciiMetadataValue, MetadataMap};
use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};
use tonic::{Request, Status};

/// The header that carries the bearer token.
pub const AUTHORIZATION: &str = "authorization";

/// Shortest token accepted: anything shorter is guessable.
pub const MIN_TOKEN_LEN: usize = 16;

/// How an agent's listener is secured. The default is plaintext and no authentication
/// (`strata dev`, tests, a private network).
#[derive(Debug, Clone, Default)]
pub struct Security {
    /// TLS on the listener (and to other agents); `None` = plaintext.
    pub tls: Option<ServerTls>,
    /// Tokens accepted; `None` = no authentication.
    pub tokens: Option<BearerTokens>,
}

/// The agent's TLS material, PEM-encoded.
#[derive(Clone)]
pub struct ServerTls {
    /// The agent's certificate chain.
    pub cert_pem: Vec<u8>,
    /// Its private key.
    pub key_pem: Vec<u8>,
    /// Require client certificates signed by this CA (mutual TLS).
    pub client_ca_pem: Option<Vec<u8>>,
    /// Trust this CA for other agents' certificates; `None` = the system's roots.
    pub peer_ca_pem: Option<Vec<u8>>,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls")
            .field("client_ca", &self.client_ca_pem.is_some())
            .field("peer_ca", &self.peer_ca_pem.is_some())
            .finish_non_exhaustive()
    }
}

impl ServerTls {
    /// The listener's TLS configuration.
    pub fn server_config(&self) -> ServerTlsConfig {
        let config =
            ServerTlsConfig::new().identity(Identity::from_pem(&self.cert_pem, &self.key_pem));
        match &self.client_ca_pem {
            Some(ca) => config.client_ca_root(Certificate::from_pem(ca)),
            None => config,
        }
    }

    /// How this agent reaches other agents.
    pub fn peer_config(&self) -> ClientTlsConfig {
        let config =
            ClientTlsConfig::new().identity(Identity::from_pem(&self.cert_pem, &self.key_pem));
        match &self.peer_ca_pem {
            Some(ca) => config.ca_certificate(Certificate::from_pem(ca)),
            None => config.with_native_roots(),
        }
    }
}

/// The bearer tokens an agent accepts.
#[derive(Clone)]
pub struct BearerTokens {
    tokens: Arc<[Vec<u8>]>,
}

impl std::fmt::Debug for BearerTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "BearerTokens({} tokens)", self.tokens.len())
    }
}

impl BearerTokens {
    /// Parses tokens: one per line (or comma-separated); blank lines and lines starting
    /// with `#` are ignored. Each token is printable ASCII without spaces, at least
    /// [`MIN_TOKEN_LEN`] characters.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut tokens = Vec::new();
        for line in text.lines().map(str::trim) {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            for token in line.split(',').map(str::trim).filter(|t| !t.is_empty()) {
                if !token.bytes().all(|b| b.is_ascii_graphic()) {
                    return Err(
                        "a token must be printable ASCII without spaces (e.g. `openssl rand \
                         -hex 32`)"
                            .to_string(),
                    );
                }
                if token.len() < MIN_TOKEN_LEN {
                    return Err(format!(
                        "a token of {} characters is too short: use at least {MIN_TOKEN_LEN} \
                         (e.g. `openssl rand -hex 32`)",
                        token.len()
                    ));
                }
                tokens.push(token.as_bytes().to_vec());
            }
        }
        if tokens.is_empty() {
            return Err("no tokens: give at least one (one per line)".to_string());
        }
        Ok(Self {
            tokens: tokens.into(),
        })
    }

    /// The `authorization` value an agent presents to other agents for its own calls
    /// (transaction markers): the first token.
    pub fn agent_authorization(&self) -> Option<AsciiMetadataValue> {
        let token = std::str::from_utf8(self.tokens.first()?).ok()?;
        format!("Bearer {token}").parse().ok()
    }

    /// Whether `presented` is one of the tokens (compared in constant time).
    fn accepts(&self, presented: &[u8]) -> bool {
        self.tokens.iter().fold(false, |found, token| {
            found | bool::from(token.as_slice().ct_eq(presented))
        })
    }

    /// Whether `token` (as a Kafka client's SASL exchange carries it) is one of the
    /// tokens, compared in constant time.
    pub fn accepts_token(&self, token: &[u8]) -> bool {
        self.accepts(token)
    }

    /// Checks a request's `authorization` header.
    pub fn check(&self, metadata: &MetadataMap) -> Result<(), Status> {
        let Some(value) = metadata.get(AUTHORIZATION) else {
            return Err(Status::unauthenticated(
                "this agent requires a bearer token: pass --token (or set STRATA_TOKEN), or \
                 send `authorization: Bearer <token>`",
            ));
        };
        let token = value
            .to_str()
            .ok()
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .ok_or_else(|| {
                Status::unauthenticated("the authorization header must be `Bearer <token>`")
            })?;
        if self.accepts(token.trim().as_bytes()) {
            Ok(())
        } else {
            Err(Status::unauthenticated(
                "the bearer token is not one this agent accepts: check --token / STRATA_TOKEN",
            ))
        }
    }
}

/// The interceptor in front of every authenticated service.
#[derive(Debug, Clone)]
pub struct Authenticate {
    tokens: Option<BearerTokens>,
    refused: prometheus::IntCounter,
}

impl Authenticate {
    /// Checks requests against `tokens` (`None`: lets everything through), counting the
    /// ones refused.
    pub fn new(tokens: Option<BearerTokens>, refused: prometheus::IntCounter) -> Self {
        Self { tokens, refused }
    }
}

impl tonic::service::Interceptor for Authenticate {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        let Some(tokens) = &self.tokens else {
            return Ok(request);
        };
        match tokens.check(request.metadata()) {
            Ok(()) => Ok(request),
            Err(status) => {
                self.refused.inc();
                tracing::debug!(
                    reason = status.message(),
                    "request refused: unauthenticated"
                );
                Err(status)
            }
        }
    }
}

/// The caller's `authorization` header, to send along with a request forwarded on its
/// behalf.
pub fn caller_authorization(metadata: &MetadataMap) -> Option<AsciiMetadataValue> {
    metadata.get(AUTHORIZATION).cloned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(header: Option<&str>) -> MetadataMap {
        let mut metadata = MetadataMap::new();
        if let Some(value) = header {
            metadata.insert(AUTHORIZATION, value.parse().unwrap());
        }
        metadata
    }

    #[test]
    fn parses_lines_commas_and_comments() {
        let tokens = BearerTokens::parse(
            "# rotate me\n0123456789abcdef\n\n fedcba9876543210,aaaaaaaaaaaaaaaa\n",
        )
        .unwrap();
        assert_eq!(tokens.tokens.len(), 3);
        assert!(
            BearerTokens::parse("short")
                .unwrap_err()
                .contains("too short")
        );
        assert!(
            BearerTokens::parse("# nothing\n\n")
                .unwrap_err()
                .contains("no tokens")
        );
        assert!(BearerTokens::parse("0123456789abcdé0").is_err());
    }

    #[test]
    fn checks_the_bearer_header() {
        let tokens = BearerTokens::parse("0123456789abcdef\nfedcba9876543210").unwrap();
        assert!(tokens.check(&with(Some("Bearer 0123456789abcdef"))).is_ok());
        assert!(tokens.check(&with(Some("Bearer fedcba9876543210"))).is_ok());
        for bad in [
            None,
            Some("Bearer 0123456789abcdeX"),
            Some("0123456789abcdef"),
            Some("Bearer "),
        ] {
            let status = tokens.check(&with(bad)).unwrap_err();
            assert_eq!(status.code(), tonic::Code::Unauthenticated, "{bad:?}");
        }
    }
}
