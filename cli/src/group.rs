//! `strata group ...`: list, describe, reset offsets, delete.

use anyhow::Result;
use strata_client::ResetTo;

use crate::args::GroupCommand;
use crate::target::Target;

/// Milliseconds since the Unix epoch, from RFC 3339 or a number of ms (`flag` names it
/// in errors).
pub(crate) fn parse_time(text: &str, flag: &str) -> Result<i64> {
    strata_client::parse_time_ms(text).map_err(|why| anyhow::anyhow!("{flag} '{text}' {why}"))
}

pub async fn run(server: &Target, command: GroupCommand) -> Result<()> {
    let admin = server.admin().await?;
    match command {
        GroupCommand::List => {
            println!("GROUP\tSTATE\tMEMBERS\tCOORDINATOR");
            for g in admin.list_groups().await? {
                println!(
                    "{}\t{}\t{}\t{}",
                    g.group_id, g.state, g.members, g.coordinator_agent_id
                );
            }
        }
        GroupCommand::Describe { group } => {
            let d = admin.describe_group(&group).await?;
            let summary = d.group.unwrap_or_default();
            println!(
                "group {}  state {}  members {}  assignor {}  epoch {}  coordinator {}",
                summary.group_id,
                summary.state,
                summary.members,
                d.assignor,
                d.group_epoch,
                summary.coordinator_agent_id
            );
            println!();
            println!("MEMBER\tINSTANCE\tEPOCH\tASSIGNED\tREVOKING");
            for m in &d.members {
                println!(
                    "{}\t{}\t{}\t{}\t{}",
                    m.member_id,
                    if m.instance_id.is_empty() {
                        "-"
                    } else {
                        &m.instance_id
                    },
                    m.member_epoch,
                    strata_proto::topic_partitions_text(&m.assignment),
                    strata_proto::topic_partitions_text(&m.revoking)
                );
            }
            println!();
            println!("TOPIC\tPARTITION\tCOMMITTED\tLOG-END\tLAG\tMEMBER\tLSO\tLAG-COMMITTED");
            for p in &d.partitions {
                let committed = if p.committed_offset < 0 {
                    "-".to_string()
                } else {
                    p.committed_offset.to_string()
                };
                println!(
                    "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
                    p.topic,
                    p.partition,
                    committed,
                    p.log_end_offset,
                    p.lag,
                    if p.member_id.is_empty() {
                        "-"
                    } else {
                        &p.member_id
                    },
                    p.last_stable_offset,
                    p.lag_committed
                );
            }
        }
        GroupCommand::ResetOffsets(args) => {
            let to = if args.to_earliest {
                ResetTo::Earliest
            } else if args.to_latest {
                ResetTo::Latest
            } else if let Some(offset) = args.to_offset {
                ResetTo::Offset(offset)
            } else {
                let text = args.to_datetime.as_deref().expect("clap requires one");
                ResetTo::Timestamp(parse_time(text, "--to-datetime")?)
            };
            for o in admin.reset_offsets(&args.group, &args.topic, to).await? {
                println!("{}\t{}\t{}", o.topic, o.partition, o.offset);
            }
        }
        GroupCommand::Delete { group } => {
            admin.delete_group(&group).await?;
            println!("deleted group {group}");
        }
    }
    Ok(())
}
