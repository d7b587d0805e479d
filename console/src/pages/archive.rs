//! Archive: each archived topic's partitions (as `strata archive status`), and snippets
//! to read the Parquet files with DuckDB and pyarrow.

use axum::extract::State;
use axum::response::Html;
use maud::html;

use super::{MAX_LISTED, ago, bytes, layout};
use crate::session::Session;
use crate::{Console, ConsoleError};

/// Where the archive of a topic lies, from `DescribeArchive`'s `location` (`archive/
/// topic=<t>/ in <store URL>[ at <endpoint>]`): the folder's URL, and the endpoint.
fn archive_url(location: &str) -> (String, Option<&str>) {
    let Some((folder, store)) = location.split_once(" in ") else {
        return (location.to_string(), None);
    };
    let (store, endpoint) = match store.split_once(" at ") {
        Some((store, endpoint)) => (store, Some(endpoint)),
        None => (store, None),
    };
    let url = match store.strip_prefix("file://") {
        Some(dir) => format!("{}/{folder}", dir.trim_end_matches('/')),
        None => format!("{}/{folder}", store.trim_end_matches('/')),
    };
    (url, endpoint)
}

/// `GET /archive`.
pub async fn page(
    session: Session,
    State(console): State<Console>,
) -> Result<Html<String>, ConsoleError> {
    let admin = console.admin(session.token()?).await?;
    let mut topics = admin.list_topics().await?;
    topics.retain(|t| t.config.get("archive.enabled").is_some_and(|v| v == "true"));
    topics.sort_by(|a, b| a.name.cmp(&b.name));
    let mut archives = Vec::new();
    for topic in topics.iter().take(MAX_LISTED) {
        archives.push((
            topic.name.clone(),
            admin.describe_archive(&topic.name).await,
        ));
    }
    let body = html! {
        @if archives.is_empty() {
            p.hint #no-archives { "No topic is archived. Create one with the config archive.enabled=true to keep its records as Parquet." }
        }
        @for (name, archive) in &archives {
            section.archive data-topic=(name) {
                h2 { a href=(super::topic_path(name)) { (name) } }
                @match archive {
                    Err(e) => div.error role="alert" { (e.to_string()) }
                    Ok(archive) => {
                        @let (url, endpoint) = archive_url(&archive.location);
                        p { "Parquet files in " code { (archive.location) } }
                        table.archive-partitions {
                            thead { tr { th.num { "Partition" } th.num { "Archived to" } th.num { "Log start" } th.num { "High watermark" } th.num { "Behind" } th.num { "Files" } th.num { "Records" } th.num { "Bytes" } th { "Last file" } } }
                            tbody {
                                @for p in &archive.partitions {
                                    tr data-partition=(p.partition) {
                                        td.num { (p.partition) }
                                        td.num.archived-to { (p.archived_to) }
                                        td.num { (p.log_start_offset) }
                                        td.num { (p.high_watermark) }
                                        td.num.behind { (p.behind()) }
                                        td.num { (p.files) }
                                        td.num { (p.records) }
                                        td.num { (bytes(p.bytes as f64)) }
                                        td { (ago(p.archived_at_ms)) @if !p.pending_file.is_empty() { " (writing " (p.pending_file) ")" } }
                                    }
                                }
                            }
                        }
                        details {
                            summary { "Read it with DuckDB or pyarrow" }
                            @if let Some(endpoint) = endpoint {
                                p.hint { "The store is S3-compatible at " code { (endpoint) } ": give DuckDB "
                                    code { "SET s3_endpoint='…'; SET s3_url_style='path';" } " and your keys (and pyarrow an "
                                    code { "S3FileSystem(endpoint_override=…)" } ")." }
                            }
                            pre.snippet { (format!("duckdb -c \"SELECT partition, \\\"offset\\\", timestamp, decode(value) FROM read_parquet('{url}*/*.parquet') ORDER BY partition, \\\"offset\\\" LIMIT 10\"")) }
                            pre.snippet { (format!("python3 -c \"import pyarrow.dataset as ds; print(ds.dataset('{url}', format='parquet').to_table().num_rows)\"")) }
                        }
                    }
                }
            }
        }
    };
    Ok(layout("Archive", "archive", Some(&session), body))
}

#[cfg(test)]
mod tests {
    use super::archive_url;

    #[test]
    fn archive_urls() {
        assert_eq!(
            archive_url("archive/topic=demo/ in s3://bucket/prefix at http://127.0.0.1:9000"),
            (
                "s3://bucket/prefix/archive/topic=demo/".to_string(),
                Some("http://127.0.0.1:9000")
            )
        );
        assert_eq!(
            archive_url("archive/topic=demo/ in file:///data/objects"),
            ("/data/objects/archive/topic=demo/".to_string(), None)
        );
    }
}
