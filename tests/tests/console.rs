//! The web console in a real browser: a cluster of three agents serving TLS and requiring a
//! token (etcd + s3s-fs) and a compactor, driven by `tests/node/console_e2e.js` —
//! Playwright (`playwright-core`, installed by scripts/build-test-clients.sh) and Debian's
//! Chromium headless. The script checks every page loads without console errors; that the
//! topic and group pages show what `strata topic describe` and `strata group describe`
//! print at the same moment; that a record produced with the CLI appears in the message
//! browser; that a topic and a record made in the console exist for the CLI, and a config
//! altered and partitions added there show in `strata topic describe`; that an empty
//! group's offsets reset and the group deleted in the console are so for the CLI; that
//! the lag chart rises while the consumer is stopped and falls once it resumes; that
//! without a token no page or action works (and a wrong token is refused). It writes a
//! screenshot of each page to `target/test-artifacts/console/`.
//!
//! This side also checks what the browser cannot: `/metrics` still answers over plaintext
//! on the TLS agents' HTTP port, and no agent's log holds the token.

use std::path::{Path, PathBuf};
use std::process::Command;

use strata_tests::pki::Pki;
use strata_tests::{AgentKind, AgentProcess, http_get, report, strata_bin};

const TOKEN: &str = "console-token-0123456789abcdef";

fn path(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// Where the screenshots go: `target/test-artifacts/console/` of the workspace.
fn artifacts() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    target.join("test-artifacts/console")
}

#[test]
fn console_in_a_real_browser() {
    let node = Path::new(env!("CARGO_MANIFEST_DIR")).join("node");
    assert!(
        node.join("node_modules/playwright-core").exists(),
        "playwright-core is not installed: run scripts/build-test-clients.sh (scripts/test.sh does)"
    );
    let chromium = std::env::var("STRATA_TEST_CHROMIUM").unwrap_or("/usr/bin/chromium".into());
    assert!(
        Path::new(&chromium).exists(),
        "no Chromium at {chromium}: scripts/install-test-deps.sh installs Debian's"
    );
    let pki = Pki::generate();
    let tokens = pki.path("tokens");
    std::fs::write(&tokens, format!("{TOKEN}\n")).unwrap();
    let (cert, ca) = (pki.agent(), pki.ca());
    let args = [
        "--tls-cert",
        path(&cert.cert),
        "--tls-key",
        path(&cert.key),
        "--tls-ca",
        path(&ca),
        "--auth-tokens-file",
        path(&tokens),
    ];
    let kind = AgentKind::new_cluster("console");
    let agents: Vec<AgentProcess> = (0..3)
        .map(|_| AgentProcess::start(kind.clone(), &args))
        .collect();
    let _compactor = strata_tests::compactor::CompactorProcess::start(
        &kind,
        &["--interval", "2s", "--archive-interval", "5s"],
    );
    let consoles: Vec<String> = agents.iter().map(|a| a.http_base("https")).collect();
    let artifacts = artifacts();
    let output = Command::new("node")
        .arg(node.join("console_e2e.js"))
        .current_dir(&node)
        .env("CONSOLE_URLS", consoles.join(","))
        .env("PLAIN_URL", agents[0].http_base("http"))
        .env("STRATA_BIN", strata_bin())
        .env(
            "STRATA_SERVER",
            agents[0].server().replace("http://", "https://"),
        )
        .env("STRATA_TLS_CA", &ca)
        .env("STRATA_TOKEN", TOKEN)
        .env("ARTIFACTS", &artifacts)
        .env("CHROMIUM", &chromium)
        .output()
        .expect("run node");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    // The script's last line: a script stopped early (by a signal Playwright handles, say)
    // may still exit 0.
    assert!(
        output.status.success() && stdout.contains("console end-to-end: all checks passed"),
        "console_e2e.js failed ({}):\n{stdout}\n{stderr}\n--- agent 0 log (tail) ---\n{}",
        output.status,
        tail(&agents[0].log_text(), 4000)
    );
    for line in stdout.lines() {
        report(line);
    }
    for page in [
        "login",
        "overview",
        "topics",
        "topic",
        "groups",
        "group",
        "archive",
        "compactor",
    ] {
        let shot = artifacts.join(format!("{page}.png"));
        let size = std::fs::metadata(&shot).map_or(0, |m| m.len());
        assert!(size > 1000, "no screenshot of {page} at {}", shot.display());
    }
    report(&format!("screenshots in {}", artifacts.display()));

    // Prometheus keeps scraping over plaintext; the token is in no log.
    assert!(http_get(&agents[0].metrics_url()).contains("strata_"));
    for agent in &agents {
        assert!(
            !agent.log_text().contains(TOKEN),
            "an agent logged the token"
        );
    }
}

fn tail(text: &str, bytes: usize) -> &str {
    let mut start = text.len().saturating_sub(bytes);
    while !text.is_char_boundary(start) {
        start += 1;
    }
    &text[start..]
}
