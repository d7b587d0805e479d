//! `strata archive status`.

use anyhow::Result;
use strata_client::Admin;

use crate::args::ArchiveCommand;
use crate::target::Target;

pub async fn run(server: &Target, command: ArchiveCommand) -> Result<()> {
    let admin = server.admin().await?;
    match command {
        ArchiveCommand::Status { topic } => status(&admin, &topic).await,
    }
}

async fn status(admin: &Admin, topic: &str) -> Result<()> {
    let archive = admin.describe_archive(topic).await?;
    if !archive.enabled {
        println!(
            "topic {topic} is not archived (archive.enabled=false); create a topic with \
             --config archive.enabled=true to archive it as Parquet"
        );
        return Ok(());
    }
    println!("topic {topic}: Parquet archive in {}", archive.location);
    println!(
        "partition\tstart\tarchived_to\tlog_start\thigh_watermark\tbehind\tfiles\trecords\tbytes\tlast_file"
    );
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    let (mut files, mut records, mut bytes, mut behind) = (0u64, 0u64, 0u64, 0i64);
    for p in &archive.partitions {
        let lag = p.behind();
        let last_file = if p.archived_at_ms == 0 {
            "never".to_string()
        } else {
            format!("{}s ago", (now_ms - p.archived_at_ms).max(0) / 1000)
        };
        println!(
            "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
            p.partition,
            p.start_offset,
            p.archived_to,
            p.log_start_offset,
            p.high_watermark,
            lag,
            p.files,
            p.records,
            p.bytes,
            last_file
        );
        files += p.files;
        records += p.records;
        bytes += p.bytes;
        behind += lag;
    }
    for p in archive
        .partitions
        .iter()
        .filter(|p| !p.pending_file.is_empty())
    {
        println!("partition {}: writing {}", p.partition, p.pending_file);
    }
    println!(
        "total: {files} files, {records} records, {bytes} bytes; {behind} offsets not archived yet"
    );
    Ok(())
}
