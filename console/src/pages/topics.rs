//! Topics: the list (as `strata topic list` + `describe`), one topic's partitions and
//! configs (as `strata topic describe`), the message browser (Fetch, as `strata
//! consume`), and the forms that create, alter, grow, delete and produce (the CLI's
//! `topic create|alter|add-partitions|delete` and `produce`).

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::response::{Html, IntoResponse, Redirect, Response};
use base64::Engine as _;
use bytes::Bytes;
use futures::StreamExt as _;
use maud::{Markup, html};
use serde::Deserialize;
use strata_client::proto::list_offsets_request::Spec;
use strata_client::proto::log_client::LogClient;
use strata_client::{Producer, ProducerConfig, ProducerRecord, proto};

use super::{
    DeleteForm, MAX_LISTED, MAX_MESSAGES, MAX_SHOWN_BYTES, config_lines, csrf_field, layout,
    or_dash, topic_path,
};
use crate::session::Session;
use crate::{Console, ConsoleError};

/// Topics with more partitions than this show no bytes in the list (summing them reads
/// every partition's index); their own page shows them.
const MAX_PARTITIONS_SIZED: usize = 256;
/// Topics with more partitions than this need one chosen to browse.
const MAX_BROWSED_PARTITIONS: usize = 32;
/// Fetches per partition for one page of messages.
const MAX_FETCHES: usize = 8;
/// Bytes one fetch asks for.
const FETCH_BYTES: usize = 1 << 20;
/// Bytes of records one page of the browser reads, over all its fetches (a fetch returns
/// at least one record, so a page may hold one record per partition past it).
const BROWSE_BYTES: usize = 8 << 20;

/// `GET /topics`.
pub async fn list(
    session: Session,
    State(console): State<Console>,
) -> Result<Html<String>, ConsoleError> {
    let admin = console.admin(session.token()?).await?;
    let mut topics = admin.list_topics().await?;
    topics.sort_by(|a, b| a.name.cmp(&b.name));
    let shown = topics.len().min(MAX_LISTED);
    let names: Vec<(String, bool)> = topics
        .iter()
        .take(shown)
        .map(|t| {
            (
                t.name.clone(),
                t.partitions as usize <= MAX_PARTITIONS_SIZED,
            )
        })
        .collect();
    let described: Vec<_> = futures::stream::iter(names)
        .map(|(name, sized)| {
            let admin = admin.clone();
            async move {
                if sized {
                    admin.describe_topic_with_bytes(&name).await
                } else {
                    admin.describe_topic(&name).await
                }
            }
        })
        .buffered(8)
        .collect()
        .await;
    let body = html! {
        table #topics {
            thead { tr { th { "Topic" } th.num { "Partitions" } th.num { "Records" } th.num { "Bytes" } th.num { "Records/s" } th { "Cleanup" } th { "Archived" } } }
            tbody {
                @for (topic, described) in topics.iter().zip(&described) {
                    tr data-topic=(topic.name) {
                        td { a href=(topic_path(&topic.name)) { (topic.name) } }
                        td.num { (topic.partitions) }
                        td.num { @match described { Ok(d) => (d.records()), Err(e) => span.warning title=(e.to_string()) { "?" } } }
                        td.num { @match described.as_ref().ok().and_then(|d| d.stored_bytes()) { Some(b) => (super::bytes(b as f64)), None => "-" } }
                        td.num { @match console.history().topic_rate(&topic.name) { Some(rate) => (format!("{rate:.1}")), None => "-" } }
                        td { (topic.config.get("cleanup.policy").map_or("delete", String::as_str)) }
                        td { (topic.config.get("archive.enabled").map_or("false", String::as_str)) }
                    }
                }
            }
        }
        @if topics.len() > shown {
            p.hint { (topics.len() - shown) " more topics not listed" }
        }
        h2 { "Create a topic" }
        form #create-topic method="post" action="/topics" {
            (csrf_field(&session))
            label { "Name " input name="name" required pattern="[a-zA-Z0-9._\\-]{1,249}"; }
            label { "Partitions " input name="partitions" type="number" min="1" value="1" required; }
            label.block { "Configs, one KEY=VALUE per line" textarea name="config" rows="3" placeholder="retention.ms=86400000" {} }
            button type="submit" { "Create" }
        }
    };
    Ok(layout("Topics", "topics", Some(&session), body))
}

#[derive(Debug, Deserialize)]
pub struct CreateForm {
    #[serde(default)]
    csrf: String,
    name: String,
    partitions: String,
    #[serde(default)]
    config: String,
}

/// `POST /topics`.
pub async fn create(
    session: Session,
    State(console): State<Console>,
    axum::Form(form): axum::Form<CreateForm>,
) -> Result<Response, ConsoleError> {
    session.check_csrf(&form.csrf)?;
    let partitions: i32 = form.partitions.trim().parse().map_err(|_| {
        ConsoleError::BadInput(format!("partitions '{}' is not a number", form.partitions))
    })?;
    let config: HashMap<String, String> = config_lines(&form.config)?.into_iter().collect();
    let admin = console.admin(session.token()?).await?;
    let topic = admin
        .create_topic(form.name.trim(), partitions, config)
        .await?;
    Ok(Redirect::to(&topic_path(&topic.name)).into_response())
}

#[derive(Debug, Deserialize, Default)]
pub struct Browse {
    /// A partition, or empty for all.
    #[serde(default)]
    partition: String,
    /// `newest` (default), `offset` or `time`.
    #[serde(default)]
    from: String,
    #[serde(default)]
    offset: String,
    /// RFC 3339 or ms since the Unix epoch.
    #[serde(default)]
    time: String,
    #[serde(default)]
    n: String,
    /// `text` (default), `json`, `hex` or `base64`.
    #[serde(default)]
    format: String,
}

/// `GET /topics/{name}`.
pub async fn page(
    session: Session,
    State(console): State<Console>,
    Path(name): Path<String>,
    Query(browse): Query<Browse>,
) -> Result<Html<String>, ConsoleError> {
    let connection = console.connect(session.token()?).await?;
    let admin = strata_client::Admin::new(connection.clone());
    let described = admin.describe_topic_with_bytes(&name).await?;
    let topic = described.topic.clone().unwrap_or_default();
    let mut config: Vec<_> = topic.config.iter().collect();
    config.sort();
    let messages = browse_messages(&connection, &admin, &name, &described, &browse).await;
    let format = match browse.format.as_str() {
        "json" | "hex" | "base64" => browse.format.as_str(),
        _ => "text",
    };
    let body = html! {
        p {
            "Topic id " code #topic-id { (topic.topic_id) } " · "
            span #partition-count { (topic.partitions) } " partitions · "
            span #record-count { (described.records()) } " records · "
            span #stored-bytes title="bytes in the object store, compressed as stored" { (super::bytes(described.stored_bytes().unwrap_or(0) as f64)) }
        }
        h2 { "Partitions" }
        table #partitions {
            thead { tr { th.num { "Partition" } th.num { "Log start" } th.num { "High watermark" } th.num { "Last stable" } th { "Owner" } th.num { "Epoch" } th.num { "Stored bytes" } } }
            tbody {
                @for p in &described.partitions {
                    tr data-partition=(p.partition) {
                        td.num { (p.partition) }
                        td.num.log-start { (p.log_start_offset) }
                        td.num.high-watermark { (p.high_watermark) }
                        td.num.last-stable { (p.last_stable_offset) }
                        td.owner { (or_dash(&p.owner_agent_id)) }
                        td.num.epoch { (p.owner_epoch) }
                        td.num.stored-bytes { (p.stored_bytes.unwrap_or(0)) }
                    }
                }
            }
        }
        h2 { "Messages" }
        form #browse method="get" action=(topic_path(&name)) {
            label { "Partition "
                select name="partition" {
                    option value="" selected[browse.partition.is_empty()] { "all" }
                    @for p in 0..topic.partitions {
                        option value=(p) selected[browse.partition == p.to_string()] { (p) }
                    }
                }
            }
            label { "From "
                select name="from" {
                    option value="newest" selected[browse.from.is_empty() || browse.from == "newest"] { "newest" }
                    option value="offset" selected[browse.from == "offset"] { "offset" }
                    option value="time" selected[browse.from == "time"] { "time" }
                }
            }
            label { "Offset " input name="offset" size="8" value=(browse.offset); }
            label { "Time " input name="time" size="22" placeholder="2026-12-03T10:00:00Z" value=(browse.time); }
            label { "Count " input name="n" size="4" value=(if browse.n.is_empty() { "20" } else { &browse.n }); }
            label { "Show as "
                select name="format" {
                    @for f in ["text", "json", "hex", "base64"] {
                        option value=(f) selected[format == f] { (f) }
                    }
                }
            }
            button type="submit" { "Show" }
        }
        @match &messages {
            Ok(records) => {
                @if records.is_empty() {
                    p.hint #no-messages { "No records." }
                } @else {
                    table #messages {
                        thead { tr { th.num { "Partition" } th.num { "Offset" } th { "Timestamp" } th { "Key" } th { "Value" } th { "Headers" } } }
                        tbody {
                            @for (partition, r) in records {
                                tr.message data-partition=(partition) data-offset=(r.offset) {
                                    td.num { (partition) }
                                    td.num { (r.offset) }
                                    td { (super::time(r.timestamp_ms)) }
                                    td.key { (shown(r.key.as_deref(), format)) }
                                    td.value { (shown(r.value.as_deref(), format)) }
                                    td {
                                        @for h in &r.headers {
                                            div { code { (h.key) } "=" (shown(Some(&h.value), format)) }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            Err(e) => div.error role="alert" { (e.to_string()) }
        }
        h2 { "Produce a record" }
        form #produce method="post" action=(format!("{}/produce", topic_path(&name))) {
            (csrf_field(&session))
            label { "Key " input name="key" size="20"; }
            label { "Partition " input name="partition" size="4" placeholder="by key"; }
            label.block { "Value" textarea name="value" rows="3" {} }
            label.block { "Headers, one KEY=VALUE per line" textarea name="headers" rows="2" {} }
            button type="submit" { "Produce" }
        }
        h2 { "Configs" }
        table #configs {
            thead { tr { th { "Config" } th { "Value" } th { "Source" } } }
            tbody {
                @for (k, v) in &config {
                    tr data-config=(k) { td { (k) } td { (v) } td { (topic.config_source(k)) } }
                }
            }
        }
        form #alter-config method="post" action=(format!("{}/config", topic_path(&name))) {
            (csrf_field(&session))
            label.block { "Set, one KEY=VALUE per line" textarea name="set" rows="2" {} }
            label { "Return to default (keys, comma-separated) " input name="delete" size="30"; }
            button type="submit" { "Alter configs" }
        }
        h2 { "Partitions and deletion" }
        form #add-partitions method="post" action=(format!("{}/partitions", topic_path(&name))) {
            (csrf_field(&session))
            label { "Grow to " input name="to" type="number" min=(topic.partitions + 1) required; " partitions" }
            button type="submit" { "Add partitions" }
        }
        form #delete-topic method="post" action=(format!("{}/delete", topic_path(&name))) {
            (csrf_field(&session))
            label { "Type the topic's name to delete it " input name="confirm" required; }
            button.danger type="submit" { "Delete topic" }
        }
    };
    Ok(layout(
        &format!("Topic {name}"),
        "topics",
        Some(&session),
        body,
    ))
}

/// A key, value or header as the visitor asked to see it, cut to [`MAX_SHOWN_BYTES`].
fn shown(bytes: Option<&[u8]>, format: &str) -> Markup {
    let Some(bytes) = bytes else {
        return html! { em.null { "null" } };
    };
    let cut = &bytes[..bytes.len().min(MAX_SHOWN_BYTES)];
    let more = bytes.len() - cut.len();
    let text = match format {
        "hex" => cut.iter().map(|b| format!("{b:02x}")).collect::<String>(),
        "base64" => base64::engine::general_purpose::STANDARD.encode(cut),
        "json" if more == 0 => match serde_json::from_slice::<serde_json::Value>(cut) {
            Ok(value) => {
                let pretty = serde_json::to_string_pretty(&value).unwrap_or_default();
                // Deep nesting pretty-prints to many times its size: shown as sent then.
                if pretty.len() <= 4 * cut.len() + 64 {
                    return html! { pre.json { (pretty) } };
                }
                String::from_utf8_lossy(cut).into_owned()
            }
            Err(_) => {
                return html! { span { (String::from_utf8_lossy(cut)) } " " em.hint { "(not JSON)" } };
            }
        },
        _ => String::from_utf8_lossy(cut).into_owned(),
    };
    html! {
        span.payload { (text) }
        @if more > 0 { " " em.hint { "… " (more) " more bytes" } }
    }
}

fn parse_number<T: std::str::FromStr>(text: &str, what: &str) -> Result<T, ConsoleError> {
    text.trim()
        .parse()
        .map_err(|_| ConsoleError::BadInput(format!("{what} '{text}' is not a number")))
}

/// Milliseconds since the Unix epoch, from RFC 3339 or a number of ms.
pub(crate) fn parse_time(text: &str) -> Result<i64, ConsoleError> {
    strata_client::parse_time_ms(text)
        .map_err(|why| ConsoleError::BadInput(format!("time '{text}' {why}")))
}

/// The records the browser asked for, as `(partition, record)`: newest first for
/// `newest`, oldest first from an offset or a time.
async fn browse_messages(
    connection: &strata_client::Connection,
    admin: &strata_client::Admin,
    topic: &str,
    described: &proto::DescribeTopicResponse,
    browse: &Browse,
) -> Result<Vec<(i32, proto::StoredRecord)>, ConsoleError> {
    let n = if browse.n.trim().is_empty() {
        20
    } else {
        parse_number::<usize>(&browse.n, "count")?
    };
    if n == 0 || n > MAX_MESSAGES {
        return Err(ConsoleError::BadInput(format!(
            "count must be 1 to {MAX_MESSAGES}"
        )));
    }
    let partition_count = described.partitions.len();
    let partitions: Vec<i32> = if browse.partition.trim().is_empty() {
        if partition_count > MAX_BROWSED_PARTITIONS {
            return Err(ConsoleError::BadInput(format!(
                "the topic has {partition_count} partitions: choose one to browse (up to \
                 {MAX_BROWSED_PARTITIONS} are browsed together)"
            )));
        }
        (0..partition_count as i32).collect()
    } else {
        let p: i32 = parse_number(&browse.partition, "partition")?;
        if p < 0 || p as usize >= partition_count {
            return Err(ConsoleError::BadInput(format!(
                "partition {p} does not exist (0 to {})",
                partition_count.saturating_sub(1)
            )));
        }
        vec![p]
    };
    let bounds = |p: i32| {
        described
            .partitions
            .iter()
            .find(|d| d.partition == p)
            .map_or((0, 0), |d| (d.log_start_offset, d.high_watermark))
    };
    let starts: Vec<(i32, i64)> = match browse.from.as_str() {
        "offset" => {
            if partitions.len() != 1 {
                return Err(ConsoleError::BadInput(
                    "choose a partition to browse from an offset".into(),
                ));
            }
            let offset: i64 = parse_number(&browse.offset, "offset")?;
            vec![(partitions[0], offset)]
        }
        "time" => {
            let ms = parse_time(&browse.time)?;
            admin
                .list_offsets(topic, partitions.clone(), Spec::TimestampMs(ms))
                .await?
                .into_iter()
                .filter(|o| o.offset >= 0)
                .map(|o| (o.partition, o.offset))
                .collect()
        }
        _ => partitions
            .iter()
            .map(|&p| {
                let (start, end) = bounds(p);
                (p, (end - n as i64).max(start))
            })
            .collect(),
    };
    let mut records = Vec::new();
    let mut budget = BROWSE_BYTES;
    for (partition, start) in starts {
        let (_, end) = bounds(partition);
        records.extend(
            fetch(connection, topic, partition, start, end, n, &mut budget)
                .await?
                .into_iter()
                .map(|r| (partition, r)),
        );
    }
    if browse.from.is_empty() || browse.from == "newest" {
        records.sort_by(|a, b| {
            (b.1.timestamp_ms, b.0, b.1.offset).cmp(&(a.1.timestamp_ms, a.0, a.1.offset))
        });
    } else {
        records.sort_by_key(|(p, r)| (r.timestamp_ms, *p, r.offset));
    }
    records.truncate(n);
    Ok(records)
}

/// Up to `n` records of one partition from `offset` (stopping at `end`, the high
/// watermark described, or when `budget` bytes are spent), through Fetch.
async fn fetch(
    connection: &strata_client::Connection,
    topic: &str,
    partition: i32,
    mut offset: i64,
    end: i64,
    n: usize,
    budget: &mut usize,
) -> Result<Vec<proto::StoredRecord>, ConsoleError> {
    let mut log = LogClient::new(connection.transport()).max_decoding_message_size(8 << 20);
    let mut records = Vec::new();
    for _ in 0..MAX_FETCHES {
        if records.len() >= n || offset >= end || *budget == 0 {
            break;
        }
        let response = log
            .fetch(proto::FetchRequest {
                topic: topic.to_string(),
                partition,
                offset,
                max_bytes: FETCH_BYTES.min(*budget) as i32,
                max_wait_ms: 0,
                ..Default::default()
            })
            .await
            .map_err(strata_client::Error::from)?
            .into_inner();
        if response.records.is_empty() || response.next_offset <= offset {
            break;
        }
        offset = response.next_offset;
        let bytes: usize = response
            .records
            .iter()
            .map(|r| {
                r.key.as_ref().map_or(0, |k| k.len())
                    + r.value.as_ref().map_or(0, |v| v.len())
                    + r.headers
                        .iter()
                        .map(|h| h.key.len() + h.value.len())
                        .sum::<usize>()
            })
            .sum();
        *budget = budget.saturating_sub(bytes);
        records.extend(response.records);
    }
    records.truncate(n);
    Ok(records)
}

#[derive(Debug, Deserialize)]
pub struct ProduceForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    key: String,
    #[serde(default)]
    value: String,
    #[serde(default)]
    partition: String,
    #[serde(default)]
    headers: String,
}

/// `POST /topics/{name}/produce`: one record, through the SDK's producer (as `strata
/// produce`); then the browser shows it.
pub async fn produce(
    session: Session,
    State(console): State<Console>,
    Path(name): Path<String>,
    axum::Form(form): axum::Form<ProduceForm>,
) -> Result<Response, ConsoleError> {
    session.check_csrf(&form.csrf)?;
    let partition = if form.partition.trim().is_empty() {
        None
    } else {
        Some(parse_number::<u32>(&form.partition, "partition")?)
    };
    let headers = config_lines(&form.headers)?
        .into_iter()
        .map(|(k, v)| (k, Bytes::from(v)))
        .collect();
    let record = ProducerRecord {
        key: (!form.key.is_empty()).then(|| Bytes::from(form.key)),
        value: Some(Bytes::from(form.value)),
        headers,
        partition,
        timestamp_ms: 0,
    };
    let connection = console.connect(session.token()?).await?;
    let producer = Producer::open(connection, ProducerConfig::default()).await;
    let position = producer.send_and_wait(&name, record).await?;
    Ok(Redirect::to(&format!(
        "{}?partition={}&from=offset&offset={}&n=1",
        topic_path(&name),
        position.partition,
        position.offset
    ))
    .into_response())
}

#[derive(Debug, Deserialize)]
pub struct AlterForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    set: String,
    #[serde(default)]
    delete: String,
}

/// `POST /topics/{name}/config`.
pub async fn alter(
    session: Session,
    State(console): State<Console>,
    Path(name): Path<String>,
    axum::Form(form): axum::Form<AlterForm>,
) -> Result<Response, ConsoleError> {
    session.check_csrf(&form.csrf)?;
    let set: HashMap<String, String> = config_lines(&form.set)?.into_iter().collect();
    let delete: Vec<String> = form
        .delete
        .split([',', ' ', '\n'])
        .map(str::trim)
        .filter(|k| !k.is_empty())
        .map(str::to_string)
        .collect();
    let admin = console.admin(session.token()?).await?;
    admin.alter_topic_config(&name, set, delete).await?;
    Ok(Redirect::to(&topic_path(&name)).into_response())
}

#[derive(Debug, Deserialize)]
pub struct GrowForm {
    #[serde(default)]
    csrf: String,
    to: String,
}

/// `POST /topics/{name}/partitions`.
pub async fn add_partitions(
    session: Session,
    State(console): State<Console>,
    Path(name): Path<String>,
    axum::Form(form): axum::Form<GrowForm>,
) -> Result<Response, ConsoleError> {
    session.check_csrf(&form.csrf)?;
    let to: i32 = parse_number(&form.to, "partitions")?;
    let admin = console.admin(session.token()?).await?;
    admin.add_partitions(&name, to).await?;
    Ok(Redirect::to(&topic_path(&name)).into_response())
}

/// `POST /topics/{name}/delete`: only when the form repeats the topic's name.
pub async fn delete(
    session: Session,
    State(console): State<Console>,
    Path(name): Path<String>,
    axum::Form(form): axum::Form<DeleteForm>,
) -> Result<Response, ConsoleError> {
    form.check(&session, &name, "topic's name")?;
    let admin = console.admin(session.token()?).await?;
    admin.delete_topic(&name).await?;
    Ok(Redirect::to("/topics").into_response())
}
