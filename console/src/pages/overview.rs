//! Overview: the agents (as `strata cluster status`), and charts of the last hour's
//! produce and fetch rates, object-store requests and cache hit ratio.

use axum::extract::State;
use axum::response::Html;
use maud::html;

use super::{layout, or_dash};
use crate::chart::line;
use crate::session::Session;
use crate::{Console, ConsoleError};

/// `GET /`.
pub async fn page(
    session: Session,
    State(console): State<Console>,
) -> Result<Html<String>, ConsoleError> {
    let admin = console.admin(session.token()?).await?;
    let metadata = admin.metadata(Vec::new()).await?;
    let (served, unassigned) = metadata.partitions_per_agent();
    let partitions: usize = metadata.topics.iter().map(|t| t.partitions.len()).sum();
    // The charts are shown to whoever may see the cluster's counters.
    let stats = admin.agent_stats().await;
    let series = console.history().cluster();
    let body = html! {
        section.cards {
            div.card { span.figure #agents-count { (metadata.agents.len()) } " agents" }
            div.card { span.figure #topics-count { (metadata.topics.len()) } " topics" }
            div.card { span.figure #partitions-count { (partitions) } " partitions" }
            div.card { span.figure #unassigned-count { (unassigned) } " unassigned" }
        }
        h2 { "Agents" }
        table #agents {
            thead { tr { th { "Agent" } th { "Address" } th { "Zone" } th.num { "Partitions" } th { "Role" } } }
            tbody {
                @for agent in &metadata.agents {
                    tr {
                        td { (agent.agent_id) }
                        td { (agent.address) }
                        td { (or_dash(&agent.zone)) }
                        td.num { (served.get(agent.agent_id.as_str()).copied().unwrap_or(0)) }
                        td { @if agent.agent_id == metadata.controller_agent_id { "controller" } @else { "agent" } }
                    }
                }
            }
        }
        @if metadata.controller_agent_id.is_empty() {
            p.warning { "No controller is elected." }
        }
        @for record in &metadata.unreadable {
            p.warning { "Unreadable record " code { (record.key) } ": " (record.reason) }
        }
        h2 { "Last hour" }
        @match &stats {
            Ok(_) => {
                p.hint { "Summed over every live agent, sampled every 5 s by this agent since it started." }
                div.charts data-refresh="10" {
                    (line("chart-produce-records", "Produced records/s", &series.produce_records.points(), "/s"))
                    (line("chart-produce-bytes", "Produced bytes/s", &series.produce_bytes.points(), "B/s"))
                    (line("chart-fetch-bytes", "Fetched bytes/s", &series.fetch_bytes.points(), "B/s"))
                    (line("chart-puts", "Segment PUTs/s", &series.puts.points(), "/s"))
                    (line("chart-gets", "Object GETs/s", &series.gets.points(), "/s"))
                    (line("chart-cache-hits", "Read-cache hit ratio", &series.cache_hit_ratio.points(), "%"))
                }
            }
            Err(e) => p.warning { "The cluster's counters are not shown: " (e.to_string()) }
        }
    };
    Ok(layout("Overview", "overview", Some(&session), body))
}
