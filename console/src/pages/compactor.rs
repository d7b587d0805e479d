//! Compactor & transactions: the running compactors' passes, totals and last errors,
//! the jobs they hold (as `strata compactors`), and the open transactions (as `strata
//! transactions list`).

use axum::extract::State;
use axum::response::Html;
use maud::html;
use strata_client::proto;
use strata_client::proto::transactions_client::TransactionsClient;

use super::{ago, layout, time};
use crate::session::Session;
use crate::{Console, ConsoleError};

/// `GET /compactor`.
pub async fn page(
    session: Session,
    State(console): State<Console>,
) -> Result<Html<String>, ConsoleError> {
    let connection = console.connect(session.token()?).await?;
    let admin = strata_client::Admin::new(connection.clone());
    let compactors = admin.describe_compactors().await?;
    let transactions = TransactionsClient::new(connection.transport())
        .list_transactions(proto::ListTransactionsRequest {})
        .await
        .map(tonic::Response::into_inner)
        .map_err(strata_client::Error::from);
    let now = crate::history::now_ms();
    let body = html! {
        h2 { "Compactors" }
        @if compactors.compactors.is_empty() {
            p.warning #no-compactors { "No compactor is running: retention, compaction, merges and the archive wait for one (strata compactor)." }
        } @else {
            table #compactors {
                thead { tr {
                    th { "Compactor" } th.num { "Passes" } th { "Last pass" } th.num { "Took (ms)" } th.num { "Jobs done" } th.num { "Jobs failed" }
                    th.num { "Expired entries" } th.num { "Merged entries" } th.num { "Compacted records" } th.num { "Objects written" } th.num { "Orphans deleted" } th.num { "Archive files" } th.num { "Archived records" }
                } }
                tbody {
                    @for c in &compactors.compactors {
                        tr data-compactor=(c.compactor_id) {
                            td { (c.compactor_id) }
                            td.num.passes { (c.passes) }
                            td { (ago(c.last_pass_ended_ms)) }
                            td.num { (c.last_pass_duration_ms) }
                            td.num { (c.jobs_done) }
                            td.num { (c.jobs_failed) }
                            td.num { (c.expired_entries) }
                            td.num { (c.merged_entries) }
                            td.num { (c.compacted_records) }
                            td.num { (c.objects_written) }
                            td.num { (c.orphans_deleted) }
                            td.num { (c.archived_files) }
                            td.num { (c.archived_records) }
                        }
                    }
                }
            }
        }
        h2 { "Jobs running now" }
        @if compactors.jobs.is_empty() {
            p.hint { "None." }
        } @else {
            table #jobs {
                thead { tr { th { "Job" } th { "Compactor" } } }
                tbody { @for j in &compactors.jobs { tr { td { (j.job) } td { (j.compactor_id) } } } }
            }
        }
        h2 { "Last errors" }
        @let errors: Vec<_> = compactors.compactors.iter().flat_map(|c| c.last_errors.iter().map(move |e| (c, e))).collect();
        @if errors.is_empty() {
            p.hint #no-errors { "None." }
        } @else {
            table #errors {
                thead { tr { th { "When" } th { "Compactor" } th { "Error" } } }
                tbody { @for (c, e) in errors.iter().rev() { tr { td { (time(e.at_ms)) } td { (c.compactor_id) } td { (e.message) } } } }
            }
        }
        h2 { "Transactions" }
        @match &transactions {
            Err(e) => div.error role="alert" { (e.to_string()) }
            Ok(listed) => {
                @if listed.transactions.is_empty() {
                    p.hint #no-transactions { "No transactional producers." }
                } @else {
                    table #transactions {
                        thead { tr { th { "Transactional id" } th { "State" } th.num { "Producer id" } th.num { "Epoch" } th.num { "Partitions" } th { "Open for" } th.num { "Timeout (ms)" } th { "Coordinator" } } }
                        tbody {
                            @for t in &listed.transactions {
                                tr {
                                    td { (t.transactional_id) }
                                    td { (t.state) }
                                    td.num { (t.producer_id) }
                                    td.num { (t.producer_epoch) }
                                    td.num { (t.partitions.iter().map(|p| p.partitions.len()).sum::<usize>()) }
                                    td { @if t.started_ms > 0 { ((now - t.started_ms).max(0) / 1000) " s" } @else { "-" } }
                                    td.num { (t.timeout_ms) }
                                    td { (t.coordinator) }
                                }
                            }
                        }
                    }
                }
            }
        }
    };
    Ok(layout(
        "Compactor & transactions",
        "compactor",
        Some(&session),
        body,
    ))
}
