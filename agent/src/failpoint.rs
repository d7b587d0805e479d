//! Test hooks. `STRATA_FAILPOINT=NAME:N[,NAME:N…]` makes the Nth pass (1-based) through
//! point NAME fail the way that point says; unset (always, outside tests) nothing fails.
//! The variable is read once. Points: `put-panic` (the task that encodes and PUTs a
//! segment panics). The embedded metastore reads `metastore-torn-append` itself.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

fn armed() -> &'static HashMap<String, u64> {
    static ARMED: OnceLock<HashMap<String, u64>> = OnceLock::new();
    ARMED.get_or_init(|| {
        std::env::var("STRATA_FAILPOINT")
            .unwrap_or_default()
            .split(',')
            .filter_map(|point| {
                let (name, n) = point.split_once(':')?;
                Some((name.trim().to_string(), n.trim().parse().ok()?))
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
    *count == *at
}
