"""Static checks of the deployment files (run by scripts/test.sh, so by CI).

Usage: check_deploy.py STRATA_BINARY

- Dockerfile: hadolint finds nothing; multi-stage; the runtime stage runs as a non-root user.
- deploy/docker-compose.yml: parses; etcd, MinIO, three agents and a compactor, each with
  a health check (or one explicitly disabled), depending only on services that exist;
  every flag and STRATA_* variable given to `strata` exists (asked of the binary's own
  --help); agents are told etcd's --max-txn-ops.
- deploy/prometheus/strata-alerts.yml and deploy/grafana/strata-dashboard.json: parse,
  and every strata_* metric they name is one the agent exports (agent/src/metrics.rs).

Terraform cannot be downloaded here, so nothing runs `terraform validate`.
"""

import json
import pathlib
import re
import shutil
import subprocess
import sys

import yaml

ROOT = pathlib.Path(__file__).resolve().parent.parent
failures = []
passed = 0


def check(ok, what):
    global passed
    if ok:
        passed += 1
    else:
        failures.append(what)


def strata_help(binary, command):
    out = subprocess.run([binary, command, "--help"], capture_output=True, text=True, check=True)
    flags = set(re.findall(r"(--[a-z0-9-]+)", out.stdout))
    envs = set(re.findall(r"env: (STRATA_[A-Z0-9_]+)", out.stdout))
    return flags, envs


def exported_metrics():
    source = (ROOT / "agent/src/metrics.rs").read_text()
    return set(re.findall(r'"(strata_[a-z_]+)"', source))


def named_metrics(text):
    # Histogram queries name the series (_bucket/_sum/_count); the metric is the stem.
    names = set(re.findall(r"\b(strata_[a-z_]+)", text))
    return {re.sub(r"_(bucket|sum|count)$", "", n) for n in names}


def check_strata_probe(binary, where, args):
    """A health check's strata command exists and takes the flags it is given."""
    probe = subprocess.run([binary, *args, "--help"], capture_output=True, text=True)
    check(probe.returncode == 0, f"{where}: health check {args} is not a strata command: {probe.stderr}")


def check_dockerfile(binary):
    path = ROOT / "Dockerfile"
    text = path.read_text()
    hadolint = shutil.which("hadolint") or str(pathlib.Path(sys.executable).parent / "hadolint")
    result = subprocess.run([hadolint, str(path)], capture_output=True, text=True)
    check(result.returncode == 0, f"hadolint Dockerfile:\n{result.stdout}{result.stderr}")
    stages = re.split(r"(?m)^FROM ", text)[1:]
    check(len(stages) >= 2, "Dockerfile is not multi-stage")
    users = re.findall(r"(?m)^USER (\S+)", stages[-1]) if stages else []
    check(bool(users) and users[-1].split(":")[0] not in ("root", "0"), "the runtime stage does not run as a non-root USER")
    health = re.search(r"(?m)^\s*CMD (\[.*\])\s*$", text.split("HEALTHCHECK", 1)[-1])
    check(health is not None, "the Dockerfile has no HEALTHCHECK CMD [...]")
    if health:
        command = json.loads(health.group(1))
        check(command[0] == "strata", f"the HEALTHCHECK does not run strata: {command}")
        check_strata_probe(binary, "Dockerfile", command[1:])


def check_compose(binary):
    compose = yaml.safe_load((ROOT / "deploy/docker-compose.yml").read_text())
    services = compose.get("services", {})
    agents = [name for name in services if name.startswith("agent-")]
    check({"etcd", "minio", "compactor"} <= set(services) and len(agents) == 3,
          f"compose services are not etcd, minio, 3 agents, compactor: {sorted(services)}")
    helps = {command: strata_help(binary, command) for command in ("agent", "compactor")}
    etcd_txn_ops = None
    for arg in services.get("etcd", {}).get("command", []):
        if str(arg).startswith("--max-txn-ops="):
            etcd_txn_ops = str(arg).split("=", 1)[1]
    for name, service in services.items():
        health = service.get("healthcheck", {})
        check(bool(health.get("test")) or health.get("disable") is True,
              f"service {name} has no health check")
        test = [str(arg) for arg in health.get("test") or []]
        if test[:2] == ["CMD", "strata"]:
            check_strata_probe(binary, f"service {name}", test[2:])
        for dependency in service.get("depends_on", {}) or {}:
            check(dependency in services, f"service {name} depends on unknown {dependency}")
        command = service.get("command", [])
        if service.get("image", "").startswith("strata") and command:
            flags, envs = helps.get(command[0], (set(), set()))
            check(command[0] in helps, f"service {name} runs unknown strata command {command[0]}")
            for arg in command[1:]:
                if str(arg).startswith("--"):
                    check(str(arg).split("=")[0] in flags, f"service {name}: strata {command[0]} has no flag {arg}")
            env = service.get("environment", {})
            for key in env:
                if key.startswith("STRATA_"):
                    check(key in envs, f"service {name}: strata {command[0]} reads no {key}")
            check(str(env.get("STRATA_ETCD_MAX_TXN_OPS", "128")) == str(etcd_txn_ops or "128"),
                  f"service {name} is not told etcd's --max-txn-ops ({etcd_txn_ops})")


def check_monitoring():
    metrics = exported_metrics()
    rules = yaml.safe_load((ROOT / "deploy/prometheus/strata-alerts.yml").read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            check(rule.get("alert") and rule.get("expr") and rule.get("labels", {}).get("severity"),
                  f"alert rule without alert/expr/severity: {rule}")
            for metric in named_metrics(rule["expr"]):
                check(metric in metrics, f"alert {rule.get('alert')} names unknown metric {metric}")
    dashboard = json.loads((ROOT / "deploy/grafana/strata-dashboard.json").read_text())
    check(len(dashboard.get("panels", [])) > 0, "the dashboard has no panels")
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            for metric in named_metrics(target["expr"]):
                check(metric in metrics, f"panel {panel['title']} names unknown metric {metric}")


def main():
    binary = sys.argv[1]
    check_dockerfile(binary)
    check_compose(binary)
    check_monitoring()
    for failure in failures:
        print(f"FAILED: {failure}", file=sys.stderr)
    total = passed + len(failures)
    print(f"deploy checks: {len(failures)} of {total} failed" if failures else f"deploy checks: all {total} hold", file=sys.stderr)
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
