//! Consumer groups: the list (as `strata group list`), one group (as `strata group
//! describe`) with its lag over time, and the reset-offsets and delete forms (`strata
//! group reset-offsets|delete`).

use axum::extract::{Path, State};
use axum::response::{Html, IntoResponse, Redirect, Response};
use maud::html;
use serde::Deserialize;
use strata_client::ResetTo;

use super::{DeleteForm, MAX_LISTED, csrf_field, group_path, layout, or_dash, topic_path};
use crate::chart::line;
use crate::history::total_lag;
use crate::session::Session;
use crate::{Console, ConsoleError};

/// `GET /groups`.
pub async fn list(
    session: Session,
    State(console): State<Console>,
) -> Result<Html<String>, ConsoleError> {
    let admin = console.admin(session.token()?).await?;
    let mut groups = admin.list_groups().await?;
    groups.sort_by(|a, b| a.group_id.cmp(&b.group_id));
    let body = html! {
        @if groups.is_empty() {
            p.hint #no-groups { "No consumer groups yet." }
        } @else {
            table #groups {
                thead { tr { th { "Group" } th { "State" } th.num { "Members" } th { "Coordinator" } th.num { "Lag (last sample)" } } }
                tbody {
                    @for g in groups.iter().take(MAX_LISTED) {
                        tr data-group=(g.group_id) {
                            td { a href=(group_path(&g.group_id)) { (g.group_id) } }
                            td { (g.state) }
                            td.num { (g.members) }
                            td { (or_dash(&g.coordinator_agent_id)) }
                            td.num { @match console.history().group_lag(&g.group_id).last() { Some(lag) => (lag), None => "-" } }
                        }
                    }
                }
            }
            @if groups.len() > MAX_LISTED {
                p.hint { (groups.len() - MAX_LISTED) " more groups not listed" }
            }
        }
    };
    Ok(layout("Consumer groups", "groups", Some(&session), body))
}

/// `GET /groups/{id}`.
pub async fn page(
    session: Session,
    State(console): State<Console>,
    Path(id): Path<String>,
) -> Result<Html<String>, ConsoleError> {
    let admin = console.admin(session.token()?).await?;
    let described = admin.describe_group(&id).await?;
    let summary = described.group.clone().unwrap_or_default();
    let lag = console.history().group_lag(&id);
    let topics: std::collections::BTreeSet<&str> = described
        .partitions
        .iter()
        .map(|p| p.topic.as_str())
        .collect();
    let list = strata_proto::topic_partitions_text;
    let body = html! {
        p #group-summary {
            "State " strong #group-state { (summary.state) } " · "
            span #member-count { (summary.members) } " members · assignor " (or_dash(&described.assignor))
            " · epoch " (described.group_epoch) " · coordinator " (or_dash(&summary.coordinator_agent_id))
            " · total lag " strong #total-lag { (total_lag(&described)) }
        }
        div.charts data-refresh="5" {
            (line("chart-lag", "Lag over time (records, all partitions)", &lag.points(), ""))
        }
        h2 { "Members" }
        @if described.members.is_empty() {
            p.hint { "No members." }
        } @else {
            table #members {
                thead { tr { th { "Member" } th { "Instance" } th.num { "Epoch" } th { "Assigned" } th { "Revoking" } } }
                tbody {
                    @for m in &described.members {
                        tr { td { (m.member_id) } td { (or_dash(&m.instance_id)) } td.num { (m.member_epoch) } td { (list(&m.assignment)) } td { (list(&m.revoking)) } }
                    }
                }
            }
        }
        h2 { "Offsets and lag" }
        table #lag {
            thead { tr { th { "Topic" } th.num { "Partition" } th.num { "Committed" } th.num { "Log end" } th.num { "Lag" } th { "Member" } th.num { "Last stable" } th.num { "Lag (committed)" } } }
            tbody {
                @for p in &described.partitions {
                    tr data-topic=(p.topic) data-partition=(p.partition) {
                        td { a href=(topic_path(&p.topic)) { (p.topic) } }
                        td.num { (p.partition) }
                        td.num.committed { @if p.committed_offset < 0 { "-" } @else { (p.committed_offset) } }
                        td.num.log-end { (p.log_end_offset) }
                        td.num.lag { (p.lag) }
                        td { (or_dash(&p.member_id)) }
                        td.num { (p.last_stable_offset) }
                        td.num { (p.lag_committed) }
                    }
                }
            }
        }
        h2 { "Reset offsets" }
        p.hint { "Only a group without members can be reset or deleted." }
        form #reset-offsets method="post" action=(format!("{}/reset", group_path(&id))) {
            (csrf_field(&session))
            label { "Topic "
                select name="topic" {
                    @for t in &topics { option value=(t) { (t) } }
                }
            }
            label { "To "
                select name="to" {
                    option value="earliest" { "earliest" }
                    option value="latest" { "latest" }
                    option value="offset" { "offset" }
                    option value="datetime" { "time" }
                }
            }
            label { "Offset or time " input name="at" size="22"; }
            button type="submit" { "Reset" }
        }
        form #delete-group method="post" action=(format!("{}/delete", group_path(&id))) {
            (csrf_field(&session))
            label { "Type the group's id to delete it " input name="confirm" required; }
            button.danger type="submit" { "Delete group" }
        }
    };
    Ok(layout(
        &format!("Group {id}"),
        "groups",
        Some(&session),
        body,
    ))
}

#[derive(Debug, Deserialize)]
pub struct ResetForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    topic: String,
    #[serde(default)]
    to: String,
    #[serde(default)]
    at: String,
}

/// `POST /groups/{id}/reset`.
pub async fn reset(
    session: Session,
    State(console): State<Console>,
    Path(id): Path<String>,
    axum::Form(form): axum::Form<ResetForm>,
) -> Result<Response, ConsoleError> {
    session.check_csrf(&form.csrf)?;
    let at = form.at.trim();
    let to = match form.to.as_str() {
        "earliest" => ResetTo::Earliest,
        "latest" => ResetTo::Latest,
        "offset" => ResetTo::Offset(
            at.parse()
                .map_err(|_| ConsoleError::BadInput(format!("offset '{at}' is not a number")))?,
        ),
        "datetime" => ResetTo::Timestamp(super::topics::parse_time(at)?),
        other => {
            return Err(ConsoleError::BadInput(format!(
                "reset to '{other}'? choose earliest, latest, offset or time"
            )));
        }
    };
    let admin = console.admin(session.token()?).await?;
    admin.reset_offsets(&id, &form.topic, to).await?;
    Ok(Redirect::to(&group_path(&id)).into_response())
}

/// `POST /groups/{id}/delete`: only when the form repeats the group's id.
pub async fn delete(
    session: Session,
    State(console): State<Console>,
    Path(id): Path<String>,
    axum::Form(form): axum::Form<DeleteForm>,
) -> Result<Response, ConsoleError> {
    form.check(&session, &id, "group's id")?;
    let admin = console.admin(session.token()?).await?;
    admin.delete_group(&id).await?;
    Ok(Redirect::to("/groups").into_response())
}
