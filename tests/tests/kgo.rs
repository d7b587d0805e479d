//! A Kafka client's own test suite against Strata: franz-go's `pkg/kgo` tests (Go module
//! proxy), run by scripts/kgo-compat.sh against `strata dev`'s Kafka listener. Tests in
//! scripts/kgo-excluded.txt are skipped (each with its reason there and in
//! docs/KAFKA_COMPATIBILITY.md); every other one must pass.
//!
//! Needs Go (the machine's; the module and build caches live in ~/.cache/strata/go).

use std::path::Path;
use std::process::Command;

use strata_tests::{report, strata_bin};

#[test]
fn franz_go_kgo_suite_passes_but_the_documented_exclusions() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let output = Command::new("bash")
        .arg(root.join("scripts/kgo-compat.sh"))
        .arg(strata_bin())
        .output()
        .expect("run scripts/kgo-compat.sh");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let summary = stdout
        .lines()
        .find(|l| l.starts_with("kgo suite:"))
        .unwrap_or("kgo suite: no summary");
    report(&format!("franz-go {summary}"));
    assert!(
        output.status.success(),
        "franz-go's kgo tests failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}
