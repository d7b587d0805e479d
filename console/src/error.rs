//! The console's one error type, and the one place it becomes an HTTP answer.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use strata_client::Code;

/// What can go wrong serving a page or an action.
#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    /// The agent requires a token and the visitor has none (or the agent refused it).
    #[error("sign in with a token")]
    NeedsToken,
    /// The agent answered with an error, or could not be reached.
    #[error("{0}")]
    Agent(#[from] strata_client::Error),
    /// A form or query field is wrong; the message says which and how.
    #[error("{0}")]
    BadInput(String),
    /// A form without the visitor's CSRF token, or from another origin.
    #[error(
        "this form did not come from this console (missing or wrong CSRF token, or another \
         origin): reload the page and try again"
    )]
    CrossSite,
    /// The agent authenticates by client certificate only.
    #[error(
        "this agent authenticates clients by certificate only; the console identifies \
         visitors by bearer token: configure tokens (--auth-tokens-file) to use it"
    )]
    CertificatesOnly,
}

impl ConsoleError {
    /// The HTTP status of this error.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::NeedsToken => StatusCode::UNAUTHORIZED,
            Self::BadInput(_) => StatusCode::BAD_REQUEST,
            Self::CrossSite => StatusCode::FORBIDDEN,
            Self::CertificatesOnly => StatusCode::SERVICE_UNAVAILABLE,
            Self::Agent(e) => match e.code() {
                Some(Code::Unauthenticated) => StatusCode::UNAUTHORIZED,
                Some(Code::PermissionDenied) => StatusCode::FORBIDDEN,
                Some(Code::NotFound) => StatusCode::NOT_FOUND,
                Some(
                    Code::InvalidArgument
                    | Code::AlreadyExists
                    | Code::FailedPrecondition
                    | Code::OutOfRange,
                ) => StatusCode::BAD_REQUEST,
                Some(Code::ResourceExhausted) => StatusCode::TOO_MANY_REQUESTS,
                Some(Code::Unavailable) | None => StatusCode::SERVICE_UNAVAILABLE,
                Some(_) => StatusCode::BAD_GATEWAY,
            },
        }
    }

    /// Whether the visitor must sign in (again) to go on.
    fn needs_login(&self) -> bool {
        matches!(self, Self::NeedsToken)
            || matches!(self, Self::Agent(e) if e.code() == Some(Code::Unauthenticated))
    }
}

impl IntoResponse for ConsoleError {
    fn into_response(self) -> Response {
        if self.needs_login() {
            return Redirect::to("/login").into_response();
        }
        let status = self.status();
        let page = crate::pages::layout(
            "Error",
            "",
            None,
            maud::html! {
                div.error role="alert" {
                    h2 { (status.as_u16()) " " (status.canonical_reason().unwrap_or("")) }
                    p { (self.to_string()) }
                }
            },
        );
        (status, page).into_response()
    }
}
