//! Pure decisions over a partition's index entries: which prefix retention drops, which
//! runs a merge rewrites, what the next archive file covers. No I/O, so every rule is
//! unit-tested here.

use std::ops::Range;

use strata_metastore::{ArchiveRange, IndexEntry};

use crate::policy::TopicPolicy;

/// How many of the first `entries` retention drops at `now_ms`: the longest prefix in
/// which every entry is older than `retention.ms` (its newest record is) or lies wholly
/// beyond the newest `retention.bytes` of the partition. Only whole entries go, and only
/// from the start, so no record newer than the limits is ever removed.
pub fn expired_prefix(entries: &[IndexEntry], policy: &TopicPolicy, now_ms: i64) -> usize {
    if !policy.delete {
        return 0;
    }
    let mut remaining: i64 = entries.iter().map(|e| e.byte_len as i64).sum();
    let mut dropped = 0;
    for entry in entries {
        let too_old = policy
            .retention_ms
            .is_some_and(|ms| entry.time_ms() < now_ms.saturating_sub(ms));
        let too_big = policy
            .retention_bytes
            .is_some_and(|bytes| remaining - entry.byte_len as i64 >= bytes);
        if !(too_old || too_big) {
            break;
        }
        remaining -= entry.byte_len as i64;
        dropped += 1;
    }
    dropped
}

/// Bounds of the runs a merge builds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MergeLimits {
    /// Target size of one merged block (one index entry); entries of at least half of it
    /// are left alone.
    pub block_bytes: u64,
    /// Most entries one run replaces (one metastore transaction).
    pub max_entries: usize,
    /// A run smaller than half a block is merged only once its newest record is this old,
    /// so the tail of a busy partition is not rewritten on every pass.
    pub min_age_ms: i64,
}

/// The runs of consecutive small entries to merge, as index ranges into `entries`: each
/// at most `block_bytes` and `max_entries`, at least two entries, and either big enough
/// (half a block, or `max_entries` entries) or old enough.
pub fn merge_runs(entries: &[IndexEntry], limits: &MergeLimits, now_ms: i64) -> Vec<Range<usize>> {
    let small = |e: &IndexEntry| e.byte_len < limits.block_bytes / 2;
    let worth_it = |run: &[IndexEntry]| {
        let bytes: u64 = run.iter().map(|e| e.byte_len).sum();
        let newest = run.iter().map(IndexEntry::time_ms).max().unwrap_or(0);
        run.len() >= 2
            && (bytes >= limits.block_bytes / 2
                || run.len() >= limits.max_entries
                || newest <= now_ms.saturating_sub(limits.min_age_ms))
    };
    let mut runs = Vec::new();
    let mut start = 0;
    while start < entries.len() {
        if !small(&entries[start]) {
            start += 1;
            continue;
        }
        let mut end = start + 1;
        let mut bytes = entries[start].byte_len;
        while end < entries.len()
            && end - start < limits.max_entries.max(2)
            && small(&entries[end])
            && bytes + entries[end].byte_len <= limits.block_bytes
        {
            bytes += entries[end].byte_len;
            end += 1;
        }
        if worth_it(&entries[start..end]) {
            runs.push(start..end);
        }
        start = end;
    }
    runs
}

/// How many of the first `entries` lie wholly below `archived_to`: on an archived topic,
/// retention and log compaction touch only those, so the archive keeps every record.
/// `None` (no archive) = all of them.
pub fn archived_prefix(entries: &[IndexEntry], archived_to: Option<i64>) -> usize {
    match archived_to {
        None => entries.len(),
        Some(to) => entries.iter().take_while(|e| e.last_offset < to).count(),
    }
}

/// The offsets of the next archive file, from `from` on: whole entries (the first may
/// start before `from`) until they hold `file_bytes` stored bytes or the log ends. `None`
/// if no entry reaches `from`.
pub fn next_archive_range(
    entries: &[IndexEntry],
    from: i64,
    file_bytes: u64,
) -> Option<ArchiveRange> {
    let mut bytes = 0u64;
    let mut last = None;
    for entry in entries.iter().filter(|e| e.last_offset >= from) {
        bytes += entry.byte_len;
        last = Some(entry.last_offset);
        if bytes >= file_bytes {
            break;
        }
    }
    last.map(|last| ArchiveRange { first: from, last })
}

/// Whether to archive now: nothing was archived yet (`last_archived_ms` 0), a whole
/// file is waiting, or the last file is old enough that
/// waiting another pass (`pass_ms`) would let the archive trail the log by more than
/// `interval_ms`.
pub fn archive_due(
    unarchived_bytes: u64,
    file_bytes: u64,
    last_archived_ms: i64,
    now_ms: i64,
    interval_ms: i64,
    pass_ms: i64,
) -> bool {
    last_archived_ms == 0
        || unarchived_bytes >= file_bytes
        || now_ms.saturating_sub(last_archived_ms) >= interval_ms.saturating_sub(pass_ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(base: i64, len: i64, bytes: u64, ts: i64) -> IndexEntry {
        IndexEntry {
            base_offset: base,
            last_offset: base + len - 1,
            object: format!("o{base}"),
            byte_start: 0,
            byte_len: bytes,
            max_timestamp_ms: ts,
            appended_at_ms: 0,
            topic_id: String::new(),
        }
    }

    fn policy(retention_ms: Option<i64>, retention_bytes: Option<i64>) -> TopicPolicy {
        TopicPolicy {
            delete: true,
            compact: false,
            retention_ms,
            retention_bytes,
            delete_retention_ms: None,
            min_compaction_lag_ms: 0,
            archive: false,
        }
    }

    #[test]
    fn time_retention_drops_only_a_prefix_of_wholly_old_entries() {
        let entries = [
            entry(0, 10, 100, 1_000),
            entry(10, 10, 100, 5_000),
            // Newer than the limit: it stays, and so does everything after it.
            entry(20, 10, 100, 9_500),
            entry(30, 10, 100, 2_000),
        ];
        assert_eq!(
            expired_prefix(&entries, &policy(Some(1_000), None), 10_000),
            2
        );
        assert_eq!(expired_prefix(&entries, &policy(None, None), 10_000), 0);
        let mut compact_only = policy(Some(1_000), None);
        compact_only.delete = false;
        assert_eq!(expired_prefix(&entries, &compact_only, 10_000), 0);
    }

    #[test]
    fn a_future_dated_record_ages_from_when_it_was_appended() {
        // A record dated 2099 in an entry appended at 5_000: it expires like its
        // neighbours, and does not hold back the entries after it.
        let mut future = entry(10, 10, 100, 4_102_444_800_000);
        future.appended_at_ms = 5_000;
        let entries = [entry(0, 10, 100, 1_000), future, entry(20, 10, 100, 6_000)];
        assert_eq!(entries[1].time_ms(), 5_000);
        assert_eq!(
            expired_prefix(&entries, &policy(Some(1_000), None), 10_000),
            3
        );
        // Entries from before the append time was recorded go by their records.
        let mut old = entry(0, 10, 100, 4_102_444_800_000);
        old.appended_at_ms = 0;
        assert_eq!(old.time_ms(), 4_102_444_800_000);
    }

    #[test]
    fn size_retention_keeps_at_least_the_limit() {
        let entries = [
            entry(0, 10, 100, 0),
            entry(10, 10, 100, 0),
            entry(20, 10, 100, 0),
        ];
        // 300 bytes, limit 150: dropping one leaves 200 >= 150, dropping two leaves 100.
        assert_eq!(expired_prefix(&entries, &policy(None, Some(150)), 0), 1);
        assert_eq!(expired_prefix(&entries, &policy(None, Some(100)), 0), 2);
        assert_eq!(expired_prefix(&entries, &policy(None, Some(1_000)), 0), 0);
    }

    #[test]
    fn only_archived_entries_may_be_dropped() {
        let entries = [entry(0, 10, 100, 0), entry(10, 10, 100, 0)];
        assert_eq!(archived_prefix(&entries, None), 2);
        assert_eq!(archived_prefix(&entries, Some(0)), 0);
        // Half of the second entry is archived: it stays whole.
        assert_eq!(archived_prefix(&entries, Some(15)), 1);
        assert_eq!(archived_prefix(&entries, Some(20)), 2);
    }

    #[test]
    fn archive_files_end_on_entry_boundaries_near_the_target() {
        let entries: Vec<IndexEntry> = (0..10).map(|i| entry(i * 10, 10, 100, 0)).collect();
        // From the middle of an entry: that entry counts whole; 300 bytes = 3 entries.
        assert_eq!(
            next_archive_range(&entries, 15, 300),
            Some(ArchiveRange {
                first: 15,
                last: 39
            })
        );
        // The rest of the log is smaller than a file: it all goes.
        assert_eq!(
            next_archive_range(&entries, 80, 1_000),
            Some(ArchiveRange {
                first: 80,
                last: 99
            })
        );
        assert_eq!(next_archive_range(&entries, 100, 1_000), None);
    }

    #[test]
    fn archive_is_due_for_a_full_file_or_before_the_interval_runs_out() {
        // interval 60 s, passes every 30 s: due once 30 s passed since the last file.
        assert!(!archive_due(10, 1_000, 100_000, 120_000, 60_000, 30_000));
        assert!(archive_due(10, 1_000, 100_000, 130_000, 60_000, 30_000));
        assert!(archive_due(1_000, 1_000, 100_000, 100_001, 60_000, 30_000));
        // Never archived: due at once.
        assert!(archive_due(1, 1_000, 0, 5, 60_000, 30_000));
    }

    #[test]
    fn merge_runs_group_small_neighbours_within_limits() {
        let limits = MergeLimits {
            block_bytes: 1_000,
            max_entries: 3,
            min_age_ms: 100,
        };
        let entries = [
            entry(0, 1, 100, 0),
            entry(1, 1, 100, 0),
            entry(2, 1, 100, 0),
            entry(3, 1, 100, 0), // the run above is full (3 entries)
            entry(4, 1, 600, 0), // big: left alone
            entry(5, 1, 100, 0),
            entry(6, 1, 100, 950), // young: run 5..7 is small and new
        ];
        assert_eq!(merge_runs(&entries, &limits, 1_000), vec![0..3]);
        // Later, the young run is old enough; entry 3 alone is never "merged".
        assert_eq!(merge_runs(&entries, &limits, 2_000), vec![0..3, 5..7]);
    }

    #[test]
    fn merge_runs_respect_the_block_size() {
        let limits = MergeLimits {
            block_bytes: 1_000,
            max_entries: 100,
            min_age_ms: 0,
        };
        let entries: Vec<IndexEntry> = (0..10).map(|i| entry(i, 1, 400, 0)).collect();
        // 400 + 400 fit, a third would not.
        assert_eq!(
            merge_runs(&entries, &limits, 0),
            vec![0..2, 2..4, 4..6, 6..8, 8..10]
        );
    }
}
