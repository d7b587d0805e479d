"""Static checks of the deployment files (run by scripts/test.sh, so by CI).

Usage: check_deploy.py STRATA_BINARY

- Dockerfile: hadolint finds nothing; multi-stage; the runtime stage runs as a non-root user.
- deploy/docker-compose.yml: parses; etcd, MinIO, three agents and a compactor, each with
  a health check (or one explicitly disabled), depending only on services that exist;
  every flag and STRATA_* variable given to `strata` exists (asked of the binary's own
  --help); agents are told etcd's --max-txn-ops.
- deploy/prometheus/strata-alerts.yml and deploy/grafana/strata-dashboard.json: parse,
  and every strata_* metric they name is one the agent or the compactor exports
  (agent/src/metrics.rs, compactor/src/metrics.rs).
- terraform/: every .tf file parses (python-hcl2); every module and example declares
  terraform >= 1.5; every variable has a type and a description, secret-looking ones are
  sensitive; every output has a description, secret-looking ones are sensitive; every
  var.X used is declared and every declared variable is used; an example passes only
  variables its module declares, every required one, and reads only outputs it has;
  each module and example has a README naming its variables (modules) or how to run it;
  checkov finds no failed check in the modules, and every skip says why.
- The local stack is one stack: the terraform local module and the compose file run the
  same etcd flags, images, agent flags and STRATA_* settings, and those cover every
  setting the integration tests give `strata agent` (tests/src/lib.rs).
- `terraform fmt -check` when terraform happens to be installed (it cannot be downloaded
  here, so nothing runs `terraform validate`).
"""

import json
import os
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
    """The agent's metrics and the compactor's."""
    names = set()
    for path in ("agent/src/metrics.rs", "compactor/src/metrics.rs"):
        names |= set(re.findall(r'"(strata_[a-z_]+)"', (ROOT / path).read_text()))
    return names


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


SECRET_NAME = re.compile(r"(password|secret|token|private_key)")
MODULE_META_ARGS = {"source", "version", "providers", "depends_on", "count", "for_each"}


def unquote(value):
    """python-hcl2 keeps the quotes of string literals and keys."""
    if isinstance(value, str) and len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1]
    return value


def blocks(parsed, kind):
    """name -> body of every `kind "name" {}` block (variable, output, module)."""
    found = {}
    for entry in parsed.get(kind, []):
        for name, body in entry.items():
            found[unquote(name)] = body
    return found


def load_terraform_dir(directory):
    """The parsed .tf files of one module or example, merged, and their text."""
    merged, text = {}, ""
    for path in sorted(directory.glob("*.tf")):
        source = path.read_text()
        text += source
        try:
            import hcl2
            parsed = hcl2.loads(source)
            check(True, "")
        except Exception as error:  # noqa: BLE001 - any parse error is the finding
            check(False, f"{path.relative_to(ROOT)} does not parse: {error}")
            continue
        for kind, entries in parsed.items():
            merged.setdefault(kind, []).extend(entries)
    for path in sorted(directory.glob("templates/*")):
        text += path.read_text()
    return merged, text


def check_terraform_dir(directory, parsed, text):
    where = directory.relative_to(ROOT)
    check("required_version" in text and re.search(r'required_version\s*=\s*">=\s*1\.5', text),
          f"{where}: no terraform {{ required_version = \">= 1.5...\" }}")
    variables = blocks(parsed, "variable")
    for name, body in variables.items():
        check(bool(unquote(body.get("description", ""))), f"{where}: variable {name} has no description")
        check("type" in body, f"{where}: variable {name} has no type")
        if SECRET_NAME.search(name):
            check(body.get("sensitive") is True, f"{where}: variable {name} looks secret but is not sensitive")
    sensitive = {name for name, body in variables.items() if body.get("sensitive") is True}
    for name, body in blocks(parsed, "output").items():
        check(bool(unquote(body.get("description", ""))), f"{where}: output {name} has no description")
        value = str(body.get("value", ""))
        if SECRET_NAME.search(name) and "certificate" not in name:
            check(body.get("sensitive") is True, f"{where}: output {name} looks secret but is not sensitive")
        for secret in sensitive:
            if f"var.{secret}" in value:
                check(body.get("sensitive") is True, f"{where}: output {name} shows sensitive var.{secret}")
    used = set(re.findall(r"\bvar\.([a-z0-9_]+)", text))
    for name in used:
        check(name in variables, f"{where}: var.{name} is used but not declared")
    for name in variables:
        check(name in used, f"{where}: variable {name} is declared but never used")
    check((directory / "README.md").exists(), f"{where}: no README.md")
    return variables


def check_terraform(binary):
    tf_root = ROOT / "terraform"
    modules, examples = {}, {}
    for directory in sorted(p for p in tf_root.glob("modules/*") if p.is_dir()):
        parsed, text = load_terraform_dir(directory)
        variables = check_terraform_dir(directory, parsed, text)
        modules[directory.resolve()] = (parsed, variables, text)
        readme = (directory / "README.md").read_text() if (directory / "README.md").exists() else ""
        for name in variables:
            check(f"`{name}`" in readme, f"{directory.relative_to(ROOT)}/README.md does not document variable {name}")
    check(len(modules) >= 2, f"expected the strata-aws and strata-local modules, found {len(modules)}")
    for directory in sorted(p for p in tf_root.glob("examples/*") if p.is_dir()):
        parsed, text = load_terraform_dir(directory)
        check_terraform_dir(directory, parsed, text)
        check(len(blocks(parsed, "module")) > 0, f"{directory.relative_to(ROOT)}: calls no module")
        examples[directory] = (parsed, text)
    check(len(examples) >= 2, f"expected an aws and a local example, found {len(examples)}")
    callers = dict(examples)
    callers.update({directory: (parsed, text) for directory, (parsed, _, text) in modules.items()})
    for directory, (parsed, text) in callers.items():
        where = pathlib.Path(directory).relative_to(ROOT)
        for call, arguments in blocks(parsed, "module").items():
            source = (directory / unquote(arguments.get("source", ""))).resolve()
            check(source in modules, f"{where}: module {call} source {arguments.get('source')} is not one of terraform/modules")
            if source not in modules:
                continue
            module_parsed, module_variables, _ = modules[source]
            given = {k for k in arguments if k not in MODULE_META_ARGS and not k.startswith("__")}
            for argument in given:
                check(argument in module_variables, f"{where}: module {call} has no variable {argument}")
            for name, body in module_variables.items():
                if "default" not in body:
                    check(name in given, f"{where}: module {call} needs variable {name}")
            module_outputs = blocks(module_parsed, "output")
            for output in set(re.findall(rf"\bmodule\.{call}(?:\[\d+\])?\.([a-z0-9_]+)", text)):
                check(output in module_outputs, f"{where}: module {call} has no output {output}")
    check_checkov(tf_root / "modules")
    check_local_stack(binary, modules)
    # Every STRATA_* setting a module gives the binary is one it reads.
    envs = strata_help(binary, "agent")[1] | strata_help(binary, "compactor")[1]
    for path in sorted(tf_root.rglob("*.tf*")):
        for name in sorted(set(re.findall(r"\b(STRATA_[A-Z0-9_]+)\s*=", path.read_text()))):
            check(name in envs, f"{path.relative_to(ROOT)} sets {name}, which strata agent/compactor does not read")
    terraform = shutil.which("terraform")
    if terraform:
        fmt = subprocess.run([terraform, "fmt", "-check", "-recursive", str(tf_root)], capture_output=True, text=True)
        check(fmt.returncode == 0, f"terraform fmt -check: {fmt.stdout}{fmt.stderr}")


def check_checkov(directory):
    checkov = os.environ.get("STRATA_CHECKOV") or shutil.which("checkov")
    check(bool(checkov) and pathlib.Path(checkov).exists(), "checkov is not installed (scripts/install-test-deps.sh)")
    if not checkov or not pathlib.Path(checkov).exists():
        return
    result = subprocess.run(
        [checkov, "-d", str(directory), "--framework", "terraform", "--skip-download", "--compact", "--quiet", "-o", "json"],
        capture_output=True, text=True)
    try:
        reports = json.loads(result.stdout)
    except json.JSONDecodeError:
        check(False, f"checkov gave no report ({result.returncode}): {result.stderr[-2000:]}")
        return
    for report in reports if isinstance(reports, list) else [reports]:
        results = report.get("results", {})
        for failed in results.get("failed_checks", []):
            check(False, f"checkov {failed['check_id']} ({failed['check_name']}) fails on {failed['resource']} in {failed['file_path']}")
        check(True, "")
    skips = re.findall(r"checkov:skip=([A-Z0-9_]+)(?::(.*))?", "".join(p.read_text() for p in directory.rglob("*.tf")))
    for check_id, reason in skips:
        check(len((reason or "").strip()) >= 20, f"checkov skip of {check_id} gives no reason")


def agent_help_settings(binary):
    """flag -> STRATA_* variable of `strata agent --help`."""
    out = subprocess.run([binary, "agent", "--help"], capture_output=True, text=True, check=True).stdout
    settings = {}
    for entry in re.split(r"\n(?=\s+-)", out):
        flag = re.search(r"(--[a-z0-9-]+)", entry)
        env = re.search(r"env: (STRATA_[A-Z0-9_]+)", entry)
        if flag and env:
            settings[flag.group(1)] = env.group(1)
    return settings


def check_local_stack(binary, modules):
    """The compose file and the local module are one stack, and it is the tests' stack."""
    compose = yaml.safe_load((ROOT / "deploy/docker-compose.yml").read_text())
    services = compose["services"]
    local_dir = (ROOT / "terraform/modules/strata-local").resolve()
    if local_dir not in modules:
        check(False, "terraform/modules/strata-local is missing")
        return
    parsed, variables, _ = modules[local_dir]
    defaults = {name: unquote(body.get("default")) for name, body in variables.items()}

    def resolve(value):
        return re.sub(r"\$\{var\.([a-z0-9_]+)\}", lambda m: str(defaults.get(m.group(1))), unquote(str(value)))

    containers = {}
    for entry in parsed.get("resource", []):
        for kind, resources in entry.items():
            if unquote(kind) == "docker_container":
                containers.update({unquote(n): body for n, body in resources.items()})
    images = {}
    for entry in parsed.get("resource", []):
        for kind, resources in entry.items():
            if unquote(kind) == "docker_image":
                images.update({unquote(n): resolve(body.get("name")) for n, body in resources.items()})
    etcd_local = [resolve(arg) for arg in containers.get("etcd", {}).get("command", [])]
    check(etcd_local == [str(a) for a in services["etcd"]["command"]],
          f"etcd flags differ: compose {services['etcd']['command']} vs local module {etcd_local}")
    for name in ("etcd", "minio"):
        check(images.get(name) == services[name]["image"],
              f"{name} image differs: compose {services[name]['image']} vs local module {images.get(name)}")
    local_text = (local_dir / "main.tf").read_text()
    # TLS and tokens (the module's `secure`, off in compose) aside.
    local_env = {name for name in re.findall(r"\b(STRATA_[A-Z0-9_]+)\s*=", local_text)
                 if not name.startswith(("STRATA_TLS_", "STRATA_AUTH_"))}
    compose_env = set(services["agent-1"]["environment"])
    check(local_env == compose_env, f"STRATA_* settings differ: compose {sorted(compose_env)} vs local module {sorted(local_env)}")
    local_flags = {resolve(a) for a in containers.get("agent", {}).get("command", []) if resolve(a).startswith("--")}
    compose_flags = {a for a in services["agent-1"]["command"] if a.startswith("--")}
    check(local_flags == compose_flags, f"agent flags differ: compose {sorted(compose_flags)} vs local module {sorted(local_flags)}")
    agents = [name for name in services if name.startswith("agent-")]
    check(defaults.get("agent_count") == len(agents), f"local module runs {defaults.get('agent_count')} agents, compose {len(agents)}")
    # The tests' settings (tests/src/lib.rs) are all given by the local stack too.
    settings = agent_help_settings(binary)
    harness = (ROOT / "tests/src/lib.rs").read_text()
    test_flags = set(re.findall(r'"(--[a-z0-9-]+)"', harness))
    for flag in sorted(test_flags):
        if flag in settings:
            covered = settings[flag] in compose_env or flag in compose_flags
            check(covered, f"the tests give strata agent {flag}, the local stack does not")


def main():
    binary = sys.argv[1]
    check_dockerfile(binary)
    check_compose(binary)
    check_monitoring()
    check_terraform(binary)
    for failure in failures:
        print(f"FAILED: {failure}", file=sys.stderr)
    total = passed + len(failures)
    print(f"deploy checks: {len(failures)} of {total} failed" if failures else f"deploy checks: all {total} hold", file=sys.stderr)
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
