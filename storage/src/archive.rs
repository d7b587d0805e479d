//! Where a topic's Parquet archive lives in the object store, beside `segments/`:
//!
//! ```text
//! archive/topic=<topic>/partition=<p>/<first offset:020>-<last offset:020>.parquet
//! ```
//!
//! `topic=` and `partition=` are Hive-style folders, so query engines (DuckDB, Spark,
//! Trino, pyarrow datasets) can prune by them; offsets are zero-padded so that a listing is
//! in offset order. The files of one partition cover consecutive offset ranges, with no
//! overlap. The compactor writes them (see `strata-compactor`); nothing else does.

/// The folder of every archive file of `topic`.
pub fn topic_prefix(topic: &str) -> String {
    format!("archive/topic={topic}/")
}

/// The folder of every archive file of one partition.
pub fn partition_prefix(topic: &str, partition: u32) -> String {
    format!("{}partition={partition}/", topic_prefix(topic))
}

/// The archive file holding the records of offsets `first..=last` of one partition.
pub fn file_name(topic: &str, partition: u32, first: i64, last: i64) -> String {
    format!(
        "{}{first:020}-{last:020}.parquet",
        partition_prefix(topic, partition)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_sort_in_offset_order() {
        assert_eq!(
            file_name("orders", 3, 0, 41),
            "archive/topic=orders/partition=3/00000000000000000000-00000000000000000041.parquet"
        );
        assert!(file_name("t", 0, 9, 9) < file_name("t", 0, 10, 20));
        assert!(file_name("t", 0, 0, 0).starts_with(&partition_prefix("t", 0)));
    }
}
