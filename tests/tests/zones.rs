//! Zone-aware reads against four agents in two zones (real etcd and s3s-fs): a Kafka
//! consumer that sets `client.rack` (KIP-392's preferred read replica) and the SDK's
//! consumer with a zone read every partition from agents of their own zone, whichever
//! agent owns the partition, as the agents' per-zone fetch metrics show.
//!
//! Needs Java and the test programs (scripts/build-test-clients.sh).

use strata_tests::kafka::java_ok;
use strata_tests::{AgentKind, AgentProcess, cli_ok, http_get, report};

/// `strata_fetch_zone_bytes_total{api="…",client_zone="…"}` of one agent.
fn zone_bytes(agent: &AgentProcess, api: &str, client_zone: &str) -> u64 {
    let metrics = http_get(&agent.metrics_url());
    let prefix =
        format!("strata_fetch_zone_bytes_total{{api=\"{api}\",client_zone=\"{client_zone}\"}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .map_or(0, |v| v.trim().parse::<f64>().unwrap() as u64)
}

#[test]
fn consumers_read_from_agents_of_their_own_zone() {
    let kind = AgentKind::new_cluster("kafka-zones");
    let zones = ["zone-a", "zone-a", "zone-b", "zone-b"];
    let agents: Vec<AgentProcess> = zones
        .iter()
        .map(|zone| AgentProcess::start(kind.clone(), &["--zone", zone]))
        .collect();
    let bootstrap = agents
        .iter()
        .map(AgentProcess::kafka_bootstrap)
        .collect::<Vec<_>>()
        .join(",");
    let server = agents[0].server();
    let topic = "zoned";
    cli_ok(&server, &["topic", "create", topic, "-p", "8"], b"");
    let records = 20_000;
    let lines: String = (0..records).map(|i| format!("k{i}:value-{i}\n")).collect();
    cli_ok(
        &server,
        &["produce", topic, "--key-separator", ":"],
        lines.as_bytes(),
    );
    let dir = tempfile::tempdir().unwrap();
    // Kafka's Java consumer with client.rack, then Strata's own consumer with --zone.
    for (api, rack) in [
        ("kafka", "zone-a"),
        ("kafka", "zone-b"),
        ("grpc", "zone-a"),
        ("grpc", "zone-b"),
    ] {
        let props = dir.path().join(format!("{rack}.properties"));
        std::fs::write(&props, format!("client.rack={rack}\n")).unwrap();
        let out = dir.path().join(format!("{api}-{rack}.keys"));
        let before: Vec<(u64, u64)> = agents
            .iter()
            .map(|a| {
                (
                    zone_bytes(a, api, "same_zone"),
                    zone_bytes(a, api, "other_zone"),
                )
            })
            .collect();
        let read = if api == "kafka" {
            java_ok(&[
                "read-committed",
                &bootstrap,
                topic,
                out.to_str().unwrap(),
                props.to_str().unwrap(),
            ]);
            std::fs::read_to_string(&out).unwrap().lines().count()
        } else {
            cli_ok(
                &server,
                &["consume", topic, "--from-beginning", "--zone", rack],
                b"",
            )
            .lines()
            .count()
        };
        assert_eq!(read, records, "the {rack} consumer read another count");
        let mut served = Vec::new();
        for ((agent, zone), (same, other)) in agents.iter().zip(zones).zip(before) {
            let same = zone_bytes(agent, api, "same_zone") - same;
            let other = zone_bytes(agent, api, "other_zone") - other;
            assert_eq!(
                other,
                0,
                "agent {} ({zone}) served {other} record bytes to a consumer in another zone",
                agent.agent_id()
            );
            if zone != rack {
                assert_eq!(
                    same, 0,
                    "an agent of the other zone served the {rack} consumer"
                );
            }
            served.push(format!("{} ({zone}) {same} B", agent.agent_id()));
        }
        assert!(
            agents
                .iter()
                .zip(zones)
                .filter(|(_, zone)| *zone == rack)
                .any(|(a, _)| zone_bytes(a, api, "same_zone") > 0),
            "no agent of {rack} served the {rack} consumer"
        );
        let setting = if api == "kafka" {
            format!("Kafka's Java consumer with client.rack={rack}")
        } else {
            format!("strata consume --zone {rack} (the SDK)")
        };
        report(&format!(
            "zone-aware reads: {setting} read all {records} records of 8 partitions (owned by \
             agents of both zones) only from agents of its zone; record bytes served: {}",
            served.join(", ")
        ));
    }
}
