//! Who is visiting: their token (from the `strata_token` cookie) and their CSRF token
//! (from the `strata_csrf` cookie).
//!
//! Invariants:
//! - the token is only ever read from the cookie or the login form's body, never from a
//!   URL, and is never logged; the cookie holds it base64url-encoded, `HttpOnly`,
//!   `SameSite=Strict`, `Path=/`, and `Secure` when the port serves TLS;
//! - a visitor without a CSRF cookie gets a fresh random one; every POST must carry the
//!   same value in its `csrf` field ([`Session::check_csrf`]), and a POST whose `Origin`
//!   is another site is refused before any handler runs;
//! - signing in checks the token with the agent (a Metadata call): a token the agent
//!   refuses is never stored.

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;
use subtle::ConstantTimeEq;

use crate::{Console, ConsoleError};

const TOKEN_COOKIE: &str = "strata_token";
const CSRF_COOKIE: &str = "strata_csrf";
/// Longest cookie header read; a longer one is ignored (treated as no cookies).
const MAX_COOKIE_HEADER: usize = 8192;

/// The visitor of one request.
#[derive(Clone)]
pub struct Session {
    token: Option<String>,
    csrf: String,
    /// Whether the agent requires a token (a page then needs one).
    tokens_required: bool,
    certificates_only: bool,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("signed_in", &self.token.is_some())
            .finish_non_exhaustive()
    }
}

impl Session {
    /// The token to call the agent with: `Err(NeedsToken)` if the agent requires one and
    /// the visitor has none.
    pub fn token(&self) -> Result<Option<&str>, ConsoleError> {
        if self.certificates_only {
            return Err(ConsoleError::CertificatesOnly);
        }
        match (&self.token, self.tokens_required) {
            (Some(token), true) => Ok(Some(token)),
            (None, true) => Err(ConsoleError::NeedsToken),
            (_, false) => Ok(None),
        }
    }

    /// Whether the visitor has signed in (and can sign out).
    pub fn signed_in(&self) -> bool {
        self.tokens_required && self.token.is_some()
    }

    /// The value forms carry in their `csrf` field.
    pub fn csrf(&self) -> &str {
        &self.csrf
    }

    /// Refuses a form whose `csrf` field is not the visitor's CSRF token.
    pub fn check_csrf(&self, presented: &str) -> Result<(), ConsoleError> {
        if !self.csrf.is_empty() && bool::from(self.csrf.as_bytes().ct_eq(presented.as_bytes())) {
            Ok(())
        } else {
            Err(ConsoleError::CrossSite)
        }
    }
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Session {
    type Rejection = ConsoleError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _state: &S,
    ) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Session>()
            .cloned()
            .ok_or(ConsoleError::CrossSite)
    }
}

/// The value of cookie `name` in `headers`.
fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter(|v| v.len() <= MAX_COOKIE_HEADER)
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

fn set_cookie(name: &str, value: &str, secure: bool, max_age: Option<u64>) -> HeaderValue {
    let mut cookie = format!("{name}={value}; Path=/; HttpOnly; SameSite=Strict");
    if let Some(age) = max_age {
        cookie.push_str(&format!("; Max-Age={age}"));
    }
    if secure {
        cookie.push_str("; Secure");
    }
    HeaderValue::from_str(&cookie).expect("cookie values are base64url or hex")
}

fn fresh_csrf() -> String {
    let bytes: [u8; 24] = rand::random();
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Whether a request's `Origin` (if it sent one) is the site it was sent to.
fn same_origin(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return true;
    };
    let Some(host) = headers.get(header::HOST).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    origin
        .strip_prefix("https://")
        .or_else(|| origin.strip_prefix("http://"))
        .is_some_and(|origin_host| origin_host == host)
}

/// Whether the `Host` a request names may reach a console without tokens: an IP address,
/// `localhost`, or the agent's advertised host. Another name could be a DNS-rebinding
/// site that resolved to this agent, making the visitor's browser its puppet.
fn host_allowed(headers: &HeaderMap, advertised: &str) -> bool {
    let Some(host) = headers.get(header::HOST).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let name = match host.strip_prefix('[') {
        Some(v6) => {
            return v6
                .split(']')
                .next()
                .is_some_and(|ip| ip.parse::<std::net::Ipv6Addr>().is_ok());
        }
        None => host.rsplit_once(':').map_or(host, |(name, _)| name),
    };
    let advertised = advertised
        .rsplit_once(':')
        .map_or(advertised, |(name, _)| name);
    name.parse::<std::net::IpAddr>().is_ok()
        || name.eq_ignore_ascii_case("localhost")
        || name.eq_ignore_ascii_case(advertised)
}

/// Headers on every console answer: no framing by other sites, nothing loaded from
/// elsewhere, no type sniffing, pages not cached.
fn harden(response: &mut Response) {
    let headers = response.headers_mut();
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; \
             form-action 'self'; base-uri 'none'",
        ),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    if !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
}

/// Middleware: refuses a request for a console without tokens by a name it does not
/// answer to, reads the visitor's cookies into a [`Session`], refuses cross-origin POSTs,
/// gives a visitor without a CSRF cookie a new one, and hardens every answer.
pub async fn attach(State(console): State<Console>, request: Request, next: Next) -> Response {
    let mut response = attach_session(console, request, next).await;
    harden(&mut response);
    response
}

async fn attach_session(console: Console, mut request: Request, next: Next) -> Response {
    let config = console.config();
    if !config.tokens_required && !host_allowed(request.headers(), &config.grpc_address) {
        return (
            axum::http::StatusCode::MISDIRECTED_REQUEST,
            format!(
                "this cluster takes no tokens, so its console answers only to IP addresses, \
                 localhost and the agent's advertised host ({}): use one of those, or turn \
                 tokens on (--auth-tokens-file)",
                config.grpc_address
            ),
        )
            .into_response();
    }
    if request.method() == Method::POST && !same_origin(request.headers()) {
        return ConsoleError::CrossSite.into_response();
    }
    let headers = request.headers();
    let token = cookie(headers, TOKEN_COOKIE)
        .and_then(|v| URL_SAFE_NO_PAD.decode(v).ok())
        .and_then(|v| String::from_utf8(v).ok());
    let existing = cookie(headers, CSRF_COOKIE)
        .filter(|v| !v.is_empty() && v.len() <= 64 && v.bytes().all(|b| b.is_ascii_graphic()))
        .map(str::to_string);
    let fresh = existing.is_none();
    let csrf = existing.unwrap_or_else(fresh_csrf);
    request.extensions_mut().insert(Session {
        token,
        csrf: csrf.clone(),
        tokens_required: config.tokens_required,
        certificates_only: config.certificates_only,
    });
    let mut response = next.run(request).await;
    if fresh {
        response.headers_mut().append(
            header::SET_COOKIE,
            set_cookie(CSRF_COOKIE, &csrf, config.tls, None),
        );
    }
    response
}

/// `GET /login`.
pub async fn login_page(session: Session, State(console): State<Console>) -> Response {
    login_form(&session, &console, None).into_response()
}

fn login_form(session: &Session, console: &Console, problem: Option<&str>) -> impl IntoResponse {
    let body = if console.config().tokens_required {
        maud::html! {
            p { "This cluster requires a token. It is kept in a cookie this browser does not let scripts read, and is sent only to this console." }
            @if let Some(problem) = problem {
                div.error role="alert" { (problem) }
            }
            form method="post" action="/login" {
                input type="hidden" name="csrf" value=(session.csrf());
                label { "Token " input #token type="password" name="token" autocomplete="current-password" required; }
                " "
                button type="submit" { "Sign in" }
            }
        }
    } else {
        maud::html! { p { "This cluster takes no tokens: every page is open. " a href="/" { "Overview" } } }
    };
    crate::pages::layout("Sign in", "", None, body)
}

#[derive(Deserialize)]
pub struct LoginForm {
    token: String,
    #[serde(default)]
    csrf: String,
}

impl std::fmt::Debug for LoginForm {
    /// Never shows the token.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoginForm").finish_non_exhaustive()
    }
}

/// `POST /login`: checks the token with the agent, then keeps it in the cookie.
pub async fn login(
    session: Session,
    State(console): State<Console>,
    axum::Form(form): axum::Form<LoginForm>,
) -> Result<Response, ConsoleError> {
    session.check_csrf(&form.csrf)?;
    let token = form.token.trim();
    if !console.config().tokens_required {
        return Ok(Redirect::to("/").into_response());
    }
    let refused = |problem: &str| {
        let mut response = login_form(&session, &console, Some(problem)).into_response();
        *response.status_mut() = axum::http::StatusCode::UNAUTHORIZED;
        Ok(response)
    };
    if token.is_empty() || token.len() > 4096 {
        return refused("Give a token.");
    }
    let admin = match console.admin(Some(token)).await {
        Ok(admin) => admin,
        Err(ConsoleError::Agent(strata_client::Error::InvalidArgument(message))) => {
            return refused(&message);
        }
        Err(e) => return Err(e),
    };
    match admin.metadata(Vec::new()).await {
        Ok(_) => {}
        // A token of a principal the ACLs do not let describe the cluster is still a
        // token: its pages show what it may see.
        Err(e) if e.code() == Some(strata_client::Code::PermissionDenied) => {}
        Err(e) if e.code() == Some(strata_client::Code::Unauthenticated) => {
            return refused("The agent does not accept this token.");
        }
        Err(e) => return Err(e.into()),
    }
    let mut response = Redirect::to("/").into_response();
    response.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(
            TOKEN_COOKIE,
            &URL_SAFE_NO_PAD.encode(token),
            console.config().tls,
            None,
        ),
    );
    Ok(response)
}

#[derive(Debug, Deserialize)]
pub struct CsrfForm {
    #[serde(default)]
    pub csrf: String,
}

/// `POST /logout`: forgets the token.
pub async fn logout(
    session: Session,
    State(console): State<Console>,
    axum::Form(form): axum::Form<CsrfForm>,
) -> Result<Response, ConsoleError> {
    session.check_csrf(&form.csrf)?;
    let mut response = Redirect::to("/login").into_response();
    response.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(TOKEN_COOKIE, "", console.config().tls, Some(0)),
    );
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (k, v) in pairs {
            headers.append(
                axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        headers
    }

    #[test]
    fn reads_cookies() {
        let h = headers(&[("cookie", "a=1; strata_csrf=xyz; b=2")]);
        assert_eq!(cookie(&h, CSRF_COOKIE), Some("xyz"));
        assert_eq!(cookie(&h, TOKEN_COOKIE), None);
    }

    #[test]
    fn origin_must_be_the_host() {
        assert!(same_origin(&headers(&[("host", "127.0.0.1:9090")])));
        assert!(same_origin(&headers(&[
            ("host", "127.0.0.1:9090"),
            ("origin", "http://127.0.0.1:9090")
        ])));
        assert!(!same_origin(&headers(&[
            ("host", "127.0.0.1:9090"),
            ("origin", "https://evil.example")
        ])));
    }

    #[test]
    fn hosts_a_console_without_tokens_answers_to() {
        let allowed =
            |host: &str| host_allowed(&headers(&[("host", host)]), "agent-1.internal:7070");
        assert!(allowed("127.0.0.1:9090"));
        assert!(allowed("[::1]:9090"));
        assert!(allowed("localhost:9090"));
        assert!(allowed("agent-1.internal:9090"));
        assert!(!allowed("rebound.example:9090"));
        assert!(!host_allowed(&HeaderMap::new(), "agent-1.internal:7070"));
    }

    #[test]
    fn csrf_must_match() {
        let session = Session {
            token: None,
            csrf: "abc".into(),
            tokens_required: false,
            certificates_only: false,
        };
        assert!(session.check_csrf("abc").is_ok());
        assert!(session.check_csrf("abd").is_err());
        assert!(session.check_csrf("").is_err());
    }
}
