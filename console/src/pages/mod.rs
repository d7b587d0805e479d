//! The pages: one module per page, each a handler that makes the CLI's gRPC calls with
//! the visitor's token and renders what they answered. The layout, the embedded
//! stylesheet and script, and the formatting shared by pages live here.

pub mod archive;
pub mod compactor;
pub mod groups;
pub mod overview;
pub mod topics;

use axum::http::header;
use axum::response::{Html, IntoResponse};
use maud::{DOCTYPE, Markup, html};

use crate::session::Session;

/// Most records the message browser shows at once.
pub const MAX_MESSAGES: usize = 500;
/// Most bytes of one key or value shown (the rest is counted, not shown).
pub const MAX_SHOWN_BYTES: usize = 16 * 1024;
/// Most topics or groups one list page shows.
pub const MAX_LISTED: usize = 500;

const STYLESHEET: &str = include_str!("../../assets/console.css");
const SCRIPT: &str = include_str!("../../assets/console.js");
const FAVICON: &str = include_str!("../../assets/favicon.svg");

/// `GET /favicon.svg` (and `/favicon.ico`, which browsers ask for unprompted).
pub async fn favicon() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "image/svg+xml"),
            (header::CACHE_CONTROL, "max-age=86400"),
        ],
        FAVICON,
    )
}

/// `GET /console.css`.
pub async fn stylesheet() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=300"),
        ],
        STYLESHEET,
    )
}

/// `GET /console.js`.
pub async fn script() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=300"),
        ],
        SCRIPT,
    )
}

const NAV: [(&str, &str, &str); 5] = [
    ("overview", "/", "Overview"),
    ("topics", "/topics", "Topics"),
    ("groups", "/groups", "Consumer groups"),
    ("archive", "/archive", "Archive"),
    ("compactor", "/compactor", "Compactor & transactions"),
];

/// A whole page: navigation (`active` names the current entry), the sign-out button for
/// a signed-in visitor, and `body`.
pub fn layout(title: &str, active: &str, session: Option<&Session>, body: Markup) -> Html<String> {
    let page = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · Strata" }
                link rel="stylesheet" href="/console.css";
                link rel="icon" href="/favicon.svg" type="image/svg+xml";
                script src="/console.js" defer {}
            }
            body {
                header {
                    a.brand href="/" { "Strata" }
                    nav {
                        @for (key, href, label) in NAV {
                            a href=(href) class=[(key == active).then_some("active")] { (label) }
                        }
                    }
                    @if let Some(session) = session.filter(|s| s.signed_in()) {
                        form.logout method="post" action="/logout" {
                            input type="hidden" name="csrf" value=(session.csrf());
                            button type="submit" { "Sign out" }
                        }
                    }
                }
                main {
                    h1 { (title) }
                    (body)
                }
            }
        }
    };
    Html(page.into_string())
}

/// The hidden field every form that changes something carries.
pub fn csrf_field(session: &Session) -> Markup {
    html! { input type="hidden" name="csrf" value=(session.csrf()); }
}

/// Characters a path segment keeps as they are; every other byte is percent-encoded.
const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'.')
    .remove(b'-')
    .remove(b'_');

/// The console's path for a topic, `/topics/NAME`, the name percent-encoded (a Kafka
/// client may have named it with any character).
pub fn topic_path(name: &str) -> String {
    format!(
        "/topics/{}",
        percent_encoding::utf8_percent_encode(name, SEGMENT)
    )
}

/// The console's path for a group, `/groups/ID`, the id percent-encoded (Kafka's group
/// ids may hold `/`, `?`, `#`).
pub fn group_path(id: &str) -> String {
    format!(
        "/groups/{}",
        percent_encoding::utf8_percent_encode(id, SEGMENT)
    )
}

/// A byte count as people read it.
pub fn bytes(n: f64) -> String {
    crate::chart::short(n, "B")
}

/// The latest time RFC 3339 can write (the end of year 9999), ms since the Unix epoch.
const LAST_RFC3339_MS: i64 = 253_402_300_799_999;

/// Milliseconds since the Unix epoch as RFC 3339 (UTC, ms); `-` for none; a time past
/// year 9999 (a producer may set any timestamp) as its number of ms.
pub fn time(ms: i64) -> String {
    if ms <= 0 {
        return "-".into();
    }
    if ms > LAST_RFC3339_MS {
        return format!("{ms} ms");
    }
    let at = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms as u64);
    humantime::format_rfc3339_millis(at).to_string()
}

/// How long ago `ms` was, as `12s ago`; `never` for none.
pub fn ago(ms: i64) -> String {
    if ms <= 0 {
        return "never".into();
    }
    let seconds = (crate::history::now_ms() - ms).max(0) / 1000;
    format!("{} ago", crate::chart::duration(seconds))
}

/// `-` for an empty string.
pub fn or_dash(s: &str) -> &str {
    if s.is_empty() { "-" } else { s }
}

/// The form of a deletion: the visitor types the name of what goes.
#[derive(Debug, serde::Deserialize)]
pub struct DeleteForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    confirm: String,
}

impl DeleteForm {
    /// Refuses a form from another site, or one that does not repeat `name` (`what`
    /// names it in the message: "topic's name", "group's id").
    pub fn check(
        &self,
        session: &Session,
        name: &str,
        what: &str,
    ) -> Result<(), crate::ConsoleError> {
        session.check_csrf(&self.csrf)?;
        if self.confirm.trim() == name {
            Ok(())
        } else {
            Err(crate::ConsoleError::BadInput(format!(
                "type the {what} ({name}) to confirm its deletion"
            )))
        }
    }
}

/// Parses `KEY=VALUE` lines (blank lines skipped) as the CLI's `--config`/`--set`.
pub fn config_lines(text: &str) -> Result<Vec<(String, String)>, crate::ConsoleError> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(|line| {
            line.split_once('=')
                .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
                .ok_or_else(|| crate::ConsoleError::BadInput(format!("'{line}' is not KEY=VALUE")))
        })
        .collect()
}
