//! Test hooks. `STRATA_FAILPOINT=NAME:N[,NAME:N…]` makes the Nth pass (1-based) through
//! point NAME fail the way that point says (`NAME:*N`: every Nth pass); unset (always,
//! outside tests) nothing fails. The variable is read once. Points: `put-panic` (the task
//! that encodes and PUTs a segment panics) and `commit-reply-lost` (a flush commit that
//! succeeded is treated as one whose outcome is unknown: its producers get UNAVAILABLE
//! and retry, as when etcd's reply is lost) and `txn-decided-exit` (a transaction
//! coordinator aborts the process right after storing a commit or abort decision,
//! before any marker). The embedded metastore reads
//! `metastore-torn-append` itself.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

/// When a point fails: on its Nth pass, or on every Nth.
#[derive(Debug, Clone, Copy)]
enum Arming {
    Once(u64),
    Every(u64),
}

fn armed() -> &'static HashMap<String, Arming> {
    static ARMED: OnceLock<HashMap<String, Arming>> = OnceLock::new();
    ARMED.get_or_init(|| {
        std::env::var("STRATA_FAILPOINT")
            .unwrap_or_default()
            .split(',')
            .filter_map(|point| {
                let (name, n) = point.split_once(':')?;
                let n = n.trim();
                let arming = match n.strip_prefix('*') {
                    Some(every) => Arming::Every(every.parse().ok().filter(|n| *n > 0)?),
                    None => Arming::Once(n.parse().ok()?),
                };
                Some((name.trim().to_string(), arming))
            })
            .collect()
    })
}

/// Whether this pass through `point` is the one to fail.
pub(crate) fn hit(point: &str) -> bool {
    let Some(at) = armed().get(point) else {
        return false;
    };
    static PASSES: Mutex<Option<HashMap<String, u64>>> = Mutex::new(None);
    let mut passes = PASSES.lock().expect("failpoint lock");
    let count = passes
        .get_or_insert_with(HashMap::new)
        .entry(point.to_string())
        .or_default();
    *count += 1;
    match *at {
        Arming::Once(n) => *count == n,
        Arming::Every(n) => (*count).is_multiple_of(n),
    }
}
