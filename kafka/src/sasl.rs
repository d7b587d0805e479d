//! SASL on the Kafka listener: PLAIN and OAUTHBEARER, each carrying one of the agent's
//! bearer tokens (the same tokens gRPC clients send).
//!
//! - PLAIN (RFC 4616): `[authzid] NUL username NUL password`; the password is the token.
//!   A token of a principal (`billing:<token>` in the tokens file) needs the user name
//!   `billing`; with a bare token the user name is the principal (bare tokens are refused
//!   at start-up when ACLs are checked, so it cannot be used to pose as someone).
//! - OAUTHBEARER (RFC 7628): the client's first message `n,[a=authzid],` then
//!   `\x01auth=Bearer <token>\x01...\x01\x01`; the token itself is checked (it is an
//!   opaque bearer token here, not a JWT).
//!
//! Kafka's exchange: SaslHandshake names the mechanism, then SaslAuthenticate carries
//! the client's message; one round either way.

use strata_agent::auth::Principal;
use strata_agent::auth::security::BearerTokens;

/// The mechanisms offered, in Kafka's names.
pub const MECHANISMS: [&str; 2] = ["PLAIN", "OAUTHBEARER"];

/// A mechanism this listener speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mechanism {
    /// SASL/PLAIN.
    Plain,
    /// SASL/OAUTHBEARER.
    OAuthBearer,
}

impl Mechanism {
    /// The mechanism Kafka names `name`.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "PLAIN" => Some(Self::Plain),
            "OAUTHBEARER" => Some(Self::OAuthBearer),
            _ => None,
        }
    }
}

/// Checks a client's SASL message for `mechanism` against `tokens` (`None`: the agent
/// has no tokens, and every well-formed message is accepted). Returns who it is, or
/// why it is refused (without the token).
pub fn authenticate(
    mechanism: Mechanism,
    message: &[u8],
    tokens: Option<&BearerTokens>,
) -> Result<Principal, String> {
    let (user, token) = match mechanism {
        Mechanism::Plain => {
            let mut parts = message.split(|b| *b == 0);
            let (Some(_authzid), Some(user), Some(password), None) =
                (parts.next(), parts.next(), parts.next(), parts.next())
            else {
                return Err(
                    "malformed SASL/PLAIN message: expected [authzid] NUL username NUL password"
                        .to_string(),
                );
            };
            let user: String = String::from_utf8_lossy(user).chars().take(256).collect();
            (Some(user), password)
        }
        Mechanism::OAuthBearer => {
            let token = message
                .split(|b| *b == 1)
                .find_map(|kv| kv.strip_prefix(b"auth="))
                .and_then(|auth| {
                    auth.strip_prefix(b"Bearer ")
                        .or_else(|| auth.strip_prefix(b"bearer "))
                })
                .ok_or_else(|| {
                    "malformed SASL/OAUTHBEARER message: expected an auth=Bearer <token> pair"
                        .to_string()
                })?;
            (None, token)
        }
    };
    let named = || {
        user.as_deref()
            .and_then(Principal::parse)
            .unwrap_or_else(Principal::anonymous)
    };
    match tokens.map(|tokens| tokens.authenticate(token)) {
        None | Some(Some(None)) => Ok(named()),
        Some(Some(Some(principal))) => match &user {
            Some(user) if user != principal.name() && *user != principal.as_str() => Err(format!(
                "authentication failed: this token belongs to {principal}; give the user name \
                 '{}' with it",
                principal.name()
            )),
            _ => Ok(principal),
        },
        Some(None) => Err(
            "authentication failed: the token is not one this agent accepts (PLAIN: the \
             password is the token; OAUTHBEARER: the bearer token)"
                .to_string(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "0123456789abcdef0123";

    fn tokens() -> BearerTokens {
        BearerTokens::parse(TOKEN).unwrap()
    }

    #[test]
    fn plain_checks_the_password_as_a_token() {
        let good = format!("\0alice\0{TOKEN}");
        assert_eq!(
            authenticate(Mechanism::Plain, good.as_bytes(), Some(&tokens())).unwrap(),
            Principal::user("alice")
        );
        let bad = "\0alice\0wrong-token-wrong-token";
        assert!(authenticate(Mechanism::Plain, bad.as_bytes(), Some(&tokens())).is_err());
        assert!(authenticate(Mechanism::Plain, b"no-separators", Some(&tokens())).is_err());
    }

    #[test]
    fn oauthbearer_checks_the_bearer_token() {
        let good = format!("n,,\x01auth=Bearer {TOKEN}\x01\x01");
        assert!(authenticate(Mechanism::OAuthBearer, good.as_bytes(), Some(&tokens())).is_ok());
        let bad = "n,,\x01auth=Bearer nope\x01\x01";
        assert!(authenticate(Mechanism::OAuthBearer, bad.as_bytes(), Some(&tokens())).is_err());
        assert!(authenticate(Mechanism::OAuthBearer, b"n,,\x01\x01", None).is_err());
    }

    #[test]
    fn a_principal_token_needs_its_user_name() {
        let tokens = BearerTokens::parse(&format!("billing:{TOKEN}")).unwrap();
        let plain = |user: &str| {
            authenticate(
                Mechanism::Plain,
                format!("\0{user}\0{TOKEN}").as_bytes(),
                Some(&tokens),
            )
        };
        assert_eq!(plain("billing").unwrap(), Principal::user("billing"));
        assert_eq!(plain("User:billing").unwrap(), Principal::user("billing"));
        assert!(
            plain("admin")
                .unwrap_err()
                .contains("belongs to User:billing")
        );
        let bearer = format!("n,,\x01auth=Bearer {TOKEN}\x01\x01");
        assert_eq!(
            authenticate(Mechanism::OAuthBearer, bearer.as_bytes(), Some(&tokens)).unwrap(),
            Principal::user("billing")
        );
    }
}
