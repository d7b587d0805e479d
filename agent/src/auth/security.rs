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
//!   says only whether the agent serves. A token given as `principal:token` belongs to
//!   that principal.
//! - The interceptor ([`Authenticate`]) puts the request's [`Caller`] (principal and
//!   address, see [`super::principal`]) in its extensions, for the authorizer.
//!
//! Invariants: a forwarded request carries the caller's own token (or, without tokens,
//! names the caller in `strata-principal`, believed only from a super user), so the agent
//! it is forwarded to authorizes the caller, not the forwarding agent; every agent of a
//! cluster must therefore accept the same tokens. Agents call each other with a token
//! derived from all of them ([`BearerTokens::agent_authorization`]), which no single
//! client holds.

use std::collections::BTreeSet;
use std::sync::Arc;

use sha2::Digest as _;
use subtle::ConstantTimeEq;
use tonic::metadata::{AsciiMetadataValue, MetadataMap};
use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};
use tonic::{Request, Status};

use super::principal::{AGENT_NAME, Caller, FORWARDED_PRINCIPAL, Principal, valid_name};

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

/// The bearer tokens an agent accepts, each with its principal if it has one.
#[derive(Clone)]
pub struct BearerTokens {
    tokens: Arc<[(Vec<u8>, Option<Principal>)]>,
    /// What agents present to each other: derived from every token.
    agent_token: Arc<str>,
}

impl std::fmt::Debug for BearerTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "BearerTokens({} tokens)", self.tokens.len())
    }
}

impl BearerTokens {
    /// Parses tokens: one per line (or comma-separated); blank lines and lines starting
    /// with `#` are ignored. Each is `principal:token` (the token belongs to the
    /// principal) or a bare token; a token is printable ASCII without spaces, at least
    /// [`MIN_TOKEN_LEN`] characters.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut tokens = Vec::new();
        for line in text.lines().map(str::trim) {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            for entry in line.split(',').map(str::trim).filter(|t| !t.is_empty()) {
                let unprefixed = entry.strip_prefix("User:").unwrap_or(entry);
                let (principal, token) = match unprefixed.split_once(':') {
                    Some((name, token)) => {
                        if !valid_name(name) || name.contains(' ') || name == "*" {
                            return Err(format!(
                                "'{name}' cannot name a principal: use 1 to 255 printable \
                                 ASCII characters without spaces"
                            ));
                        }
                        if name == AGENT_NAME || name == "ANONYMOUS" {
                            return Err(format!(
                                "the principal name '{name}' is reserved: choose another"
                            ));
                        }
                        (Some(Principal::user(name)), token)
                    }
                    None => (None, entry),
                };
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
                tokens.push((token.as_bytes().to_vec(), principal));
            }
        }
        if tokens.is_empty() {
            return Err("no tokens: give at least one (one per line)".to_string());
        }
        // Every agent derives the same token from the same set, whatever their order.
        let mut sorted: Vec<&[u8]> = tokens.iter().map(|(t, _)| t.as_slice()).collect();
        sorted.sort_unstable();
        let mut digest = sha2::Sha256::new();
        digest.update(b"strata inter-agent token v1");
        for token in sorted {
            digest.update([0]);
            digest.update(token);
        }
        let agent_token: String = digest
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        Ok(Self {
            tokens: tokens.into(),
            agent_token: agent_token.into(),
        })
    }

    /// Whether some token has no principal (a bare token: all-powerful, so refused when
    /// ACLs are checked).
    pub fn has_bare_tokens(&self) -> bool {
        self.tokens.iter().any(|(_, p)| p.is_none())
    }

    /// The `authorization` value an agent presents to other agents for its own calls
    /// (transaction markers, forwarded offsets): a token derived from all the tokens,
    /// which authenticates as [`Principal::agent`].
    pub fn agent_authorization(&self) -> Option<AsciiMetadataValue> {
        format!("Bearer {}", self.agent_token).parse().ok()
    }

    /// The agents' own token (what [`BearerTokens::agent_authorization`] presents), for
    /// the agent's own clients such as the console's sampler.
    pub fn agent_token(&self) -> &str {
        &self.agent_token
    }

    /// Who `presented` authenticates: `Some(Some(principal))` for a token of a
    /// principal (or the agents' token), `Some(None)` for a bare token, `None` if it is
    /// no token of this agent's. Compared in constant time.
    pub fn authenticate(&self, presented: &[u8]) -> Option<Option<Principal>> {
        let mut found = None;
        for (token, principal) in self.tokens.iter() {
            if bool::from(token.as_slice().ct_eq(presented)) {
                found = Some(principal.clone());
            }
        }
        if bool::from(self.agent_token.as_bytes().ct_eq(presented)) {
            found = Some(Some(Principal::agent()));
        }
        found
    }

    /// Whether `token` (as a Kafka client's SASL exchange carries it) is one of the
    /// tokens, compared in constant time.
    pub fn accepts_token(&self, token: &[u8]) -> bool {
        self.authenticate(token).is_some()
    }

    /// Checks a request's `authorization` header; returns the token's principal, if it
    /// has one.
    pub fn check(&self, metadata: &MetadataMap) -> Result<Option<Principal>, Status> {
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
        self.authenticate(token.trim().as_bytes()).ok_or_else(|| {
            Status::unauthenticated(
                "the bearer token is not one this agent accepts: check --token / STRATA_TOKEN",
            )
        })
    }
}

/// The interceptor in front of every authenticated service: checks the token (if the
/// agent has tokens) and puts the request's [`Caller`] in its extensions.
#[derive(Debug, Clone)]
pub struct Authenticate {
    tokens: Option<BearerTokens>,
    /// Principals whose `strata-principal` header (naming a forwarded request's caller)
    /// is believed: the agents and the super users.
    trusted: Arc<BTreeSet<Principal>>,
    refused: prometheus::IntCounter,
}

impl Authenticate {
    /// Checks requests against `tokens` (`None`: lets everything through), counting the
    /// ones refused; believes forwarded principals from `super_users`.
    pub fn new(
        tokens: Option<BearerTokens>,
        super_users: BTreeSet<Principal>,
        refused: prometheus::IntCounter,
    ) -> Self {
        let mut trusted = super_users;
        trusted.insert(Principal::agent());
        Self {
            tokens,
            trusted: Arc::new(trusted),
            refused,
        }
    }

    /// Who sent `request`: its token's principal, else its client certificate's subject,
    /// else anonymous; a trusted forwarder's `strata-principal` replaces it.
    fn caller(&self, request: &Request<()>, token_principal: Option<Principal>) -> Caller {
        let host = request
            .remote_addr()
            .map(|a| a.ip().to_string())
            .unwrap_or_else(|| "*".to_string());
        let principal = token_principal
            .or_else(|| {
                request
                    .peer_certs()
                    .and_then(|certs| certs.first().and_then(|c| Principal::from_certificate(c)))
            })
            .unwrap_or_else(Principal::anonymous);
        let forwarded = request
            .metadata()
            .get(FORWARDED_PRINCIPAL)
            .and_then(|v| v.to_str().ok())
            .and_then(Principal::parse);
        match forwarded {
            Some(caller) if self.trusted.contains(&principal) => Caller::new(caller, host),
            _ => Caller::new(principal, host),
        }
    }
}

impl tonic::service::Interceptor for Authenticate {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        let token_principal = match &self.tokens {
            None => None,
            Some(tokens) => match tokens.check(request.metadata()) {
                Ok(principal) => principal,
                Err(status) => {
                    self.refused.inc();
                    tracing::debug!(
                        reason = status.message(),
                        "request refused: unauthenticated"
                    );
                    return Err(status);
                }
            },
        };
        let caller = self.caller(&request, token_principal);
        request.extensions_mut().insert(caller);
        Ok(request)
    }
}

/// The caller the interceptor found (anonymous if none ran, as in unit tests).
pub fn caller_of<T>(request: &Request<T>) -> Caller {
    request
        .extensions()
        .get::<Caller>()
        .cloned()
        .unwrap_or_else(|| Caller::new(Principal::anonymous(), "*"))
}

/// What a request forwarded on a caller's behalf carries: the caller's own token, or
/// (without one) the caller's principal, named by the forwarding agent.
#[derive(Debug, Clone)]
pub struct OnBehalfOf {
    authorization: Option<AsciiMetadataValue>,
    principal: Principal,
}

impl OnBehalfOf {
    /// The credentials of `request`'s caller.
    pub fn caller<T>(request: &Request<T>) -> Self {
        Self {
            authorization: request.metadata().get(AUTHORIZATION).cloned(),
            principal: caller_of(request).principal,
        }
    }

    /// Puts them on a request to forward; `own` is what this agent presents for itself.
    pub fn apply(&self, metadata: &mut MetadataMap, own: Option<&AsciiMetadataValue>) {
        match (&self.authorization, own) {
            (Some(authorization), _) => {
                metadata.insert(AUTHORIZATION, authorization.clone());
            }
            (None, own) => {
                if let Some(own) = own {
                    metadata.insert(AUTHORIZATION, own.clone());
                }
                if let Ok(value) = self.principal.as_str().parse() {
                    metadata.insert(FORWARDED_PRINCIPAL, value);
                }
            }
        }
    }
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

    #[test]
    fn tokens_of_principals_and_the_agents_token() {
        let tokens =
            BearerTokens::parse("billing:0123456789abcdef\nUser:ops:fedcba9876543210").unwrap();
        assert!(!tokens.has_bare_tokens());
        let principal = |header: &str| tokens.check(&with(Some(header))).unwrap();
        assert_eq!(
            principal("Bearer 0123456789abcdef"),
            Some(Principal::user("billing"))
        );
        assert_eq!(
            principal("Bearer fedcba9876543210"),
            Some(Principal::user("ops"))
        );
        let agent = tokens.agent_authorization().unwrap();
        assert_eq!(principal(agent.to_str().unwrap()), Some(Principal::agent()));
        // The same set in another order derives the same agents' token; another set not.
        let reordered =
            BearerTokens::parse("ops:fedcba9876543210,billing:0123456789abcdef").unwrap();
        assert_eq!(reordered.agent_authorization(), Some(agent.clone()));
        let other = BearerTokens::parse("billing:0123456789abcdeX").unwrap();
        assert_ne!(other.agent_authorization(), Some(agent));
        assert!(
            BearerTokens::parse("0123456789abcdef")
                .unwrap()
                .has_bare_tokens()
        );
        for reserved in [
            "strata-agent:0123456789abcdef",
            "ANONYMOUS:0123456789abcdef",
        ] {
            assert!(
                BearerTokens::parse(reserved)
                    .unwrap_err()
                    .contains("reserved")
            );
        }
        assert!(BearerTokens::parse("*:0123456789abcdef").is_err());
    }
}
