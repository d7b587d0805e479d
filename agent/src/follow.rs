//! Following a metastore watch: the one loop behind every cache an agent keeps in step
//! with the metastore (its topics, the ACLs).
//!
//! Invariant: `sync` runs on every notification, and a watch notifies once at once when
//! it is (re)established, so whatever changed while no watch ran is read; a watch that
//! cannot be opened is retried every second; the loop ends when `stop` turns true.

use std::fmt::Display;
use std::future::Future;
use std::time::Duration;

use strata_metastore::ChangeWatch;
use tokio::sync::watch;

/// Runs `sync` on every change `open`'s watch reports until `stop`; `what` names the
/// followed state in warnings. A failed `sync` waits for the next notification.
pub(crate) async fn follow_changes<O, OF, OE, S, SF, SE>(
    what: &'static str,
    mut stop: watch::Receiver<bool>,
    mut open: O,
    mut sync: S,
) where
    O: FnMut() -> OF,
    OF: Future<Output = Result<ChangeWatch, OE>>,
    OE: Display,
    S: FnMut() -> SF,
    SF: Future<Output = Result<(), SE>>,
    SE: Display,
{
    loop {
        let mut changes = match open().await {
            Ok(changes) => changes,
            Err(e) => {
                tracing::warn!(error = %e, what, "cannot watch; retrying");
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    _ = stop.wait_for(|s| *s) => return,
                }
            }
        };
        loop {
            tokio::select! {
                change = changes.recv() => if change.is_none() { break },
                _ = stop.wait_for(|s| *s) => return,
            }
            if let Err(e) = sync().await {
                tracing::warn!(error = %e, what, "cannot read after a change; waiting for the next");
            }
        }
    }
}
