"""deploy/ stays honest without a container engine: every YAML parses, every
peerledger command line in it parses with the real CLI parser, every
environment variable it sets is one the code reads, every port it probes or
scrapes is the one the process was told to listen on, and every metric the
Grafana dashboard queries is one the code exports."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from ledger.cli import common
from ledger.cli import main as cli

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
COMPOSE = DEPLOY / "compose.yaml"
K8S = DEPLOY / "k8s"
PROMETHEUS = DEPLOY / "prometheus" / "prometheus.yml"
DASHBOARDS = DEPLOY / "grafana" / "dashboards"
IMAGE = "peerledger"  # the image deploy/Dockerfile builds (compose tag and k8s name, before kustomize renames it)
# The long-running process types and the flag that sets the port each serves
# /metrics, /healthz and /readyz on.
PORT_FLAG = {"consume": "metrics_port", "project": "metrics_port", "serve": "port", "deliver": "metrics_port",
             "publish": "metrics_port"}


def yaml_files() -> list[Path]:
    return sorted(p for p in DEPLOY.rglob("*") if p.suffix in (".yaml", ".yml"))


def load(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def k8s_objects() -> list[dict[str, Any]]:
    return [doc for path in sorted(K8S.glob("*.yaml")) for doc in yaml.safe_load_all(path.read_text())
            if doc and "kind" in doc and doc.get("apiVersion") != "kustomize.config.k8s.io/v1beta1"]


def compose_services() -> dict[str, dict[str, Any]]:
    return load(COMPOSE)["services"]


def peerledger_services() -> dict[str, dict[str, Any]]:
    return {name: s for name, s in compose_services().items() if s.get("image", "").split(":")[0] == IMAGE}


def k8s_containers() -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """(the Deployment, its container) for every peerledger container."""
    for obj in k8s_objects():
        if obj["kind"] == "Deployment":
            for container in obj["spec"]["template"]["spec"]["containers"]:
                assert container["image"] == IMAGE
                yield obj, container


def parse(argv: list[str]) -> Any:
    """The CLI's own parser on a deploy file's command line (argparse exits on an unknown flag)."""
    try:
        return cli.parser().parse_args([str(a) for a in argv])
    except SystemExit as e:
        raise AssertionError(f"`peerledger {' '.join(map(str, argv))}` does not parse (exit {e.code})") from None


def served_port(argv: list[str]) -> int:
    args = parse(argv)
    port = getattr(args, PORT_FLAG[args.command])
    assert port is not None, f"`{' '.join(argv)}` serves no /metrics, /healthz, /readyz"
    return int(port)


def strings(obj: Any) -> Iterator[str]:
    """Every string value in a parsed YAML document (comments are not values)."""
    if isinstance(obj, str):
        yield obj
    elif isinstance(obj, dict):
        for value in obj.values():
            yield from strings(value)
    elif isinstance(obj, list):
        for value in obj:
            yield from strings(value)


def interpolated(value: str) -> list[str]:
    """Compose variables a value takes from deploy/.env: ${NAME:?...} or ${NAME:-...}."""
    return re.findall(r"\$\{([A-Z0-9_]+)(?::[?-][^}]*)?\}", value)


# -- both trees parse ---------------------------------------------------------------


@pytest.mark.parametrize("path", yaml_files(), ids=lambda p: str(p.relative_to(DEPLOY)))
def test_every_yaml_file_of_deploy_parses(path: Path):
    assert list(yaml.safe_load_all(path.read_text()))


def test_both_trees_are_there_with_the_dashboard_and_dockerfile():
    assert COMPOSE.is_file() and PROMETHEUS.is_file() and (DEPLOY / ".env.example").is_file()
    assert {p.name for p in K8S.glob("*.yaml")} >= {"kustomization.yaml", "consume.yaml", "projector.yaml",
                                                   "api.yaml", "configmap.yaml", "external-services.yaml"}
    assert [json.loads(p.read_text())["uid"] for p in DASHBOARDS.glob("*.json")] == ["peerledger"]
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    assert "FROM python:3.11-slim" in dockerfile and 'ENTRYPOINT ["peerledger"]' in dockerfile


# -- compose ------------------------------------------------------------------------


def test_compose_runs_kafka_in_kraft_mode_postgres_and_every_peerledger_process_type():
    services = compose_services()
    assert services["kafka"]["image"].startswith("apache/kafka:")
    assert "controller" in services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"]
    assert services["postgres"]["image"].startswith("postgres:")
    commands = {parse(s["command"]).command: s for s in peerledger_services().values()}
    assert set(commands) == set(PORT_FLAG)
    assert commands["consume"]["deploy"]["replicas"] >= 2  # N consumers in one group
    assert len({parse(s["command"]).group for s in commands.values() if parse(s["command"]).command == "consume"}) == 1
    assert {"prometheus", "grafana"} <= set(services)
    assert load(COMPOSE)["x-peerledger"]["build"]["dockerfile"] == "deploy/Dockerfile"


def test_compose_writers_leave_the_projection_to_the_projection_workers():
    for service in peerledger_services().values():
        args = parse(service["command"])
        if args.command in ("consume", "serve"):
            assert args.projector == "none"
        if args.command == "project":
            assert args.follow


def test_one_deliverer_per_database_and_no_api_replica_runs_its_own():
    """Two deliverers would send every document twice (docs/bookings.md)."""
    for service in peerledger_services().values():
        args = parse(service["command"])
        if args.command == "serve":
            assert args.deliverer == "none"
        if args.command == "deliver":
            assert args.follow and service.get("deploy", {}).get("replicas", 1) == 1
    for deployment, container in k8s_containers():
        args = parse(container["args"])
        if args.command == "serve":
            assert args.deliverer == "none"
        if args.command == "deliver":
            assert deployment["spec"]["replicas"] == 1 and deployment["spec"]["strategy"]["type"] == "Recreate"


def test_every_long_running_compose_service_has_a_restart_policy_and_a_healthcheck():
    for name, service in compose_services().items():
        if name == "kafka-topics":  # a one-off: creates the topics and exits
            assert service["restart"] == "no"
            continue
        assert service["restart"] == "unless-stopped", name
        assert service["healthcheck"]["test"], name


def test_compose_healthchecks_probe_readyz_on_the_port_each_process_serves():
    for name, service in peerledger_services().items():
        probe = " ".join(service["healthcheck"]["test"])
        url = urlsplit(re.search(r"http://[^'\" ]+", probe).group(0))  # type: ignore[union-attr]
        assert (url.path, url.port) == ("/readyz", served_port(service["command"])), name


def test_compose_keeps_state_in_named_volumes():
    compose = load(COMPOSE)
    declared = set(compose["volumes"])
    used = {v.split(":")[0] for s in compose["services"].values() for v in s.get("volumes", ())
            if not v.startswith(".")}
    assert used == declared and {"kafka-data", "postgres-data", "prometheus-data", "grafana-data"} <= declared


def test_compose_holds_no_secret_and_env_example_names_every_variable_it_needs():
    for service in compose_services().values():
        for key, value in (service.get("environment") or {}).items():
            if re.search(r"PASSWORD|SECRET|TOKEN", key):
                assert interpolated(str(value)), f"{key} must come from deploy/.env, not the file"
    required = {m for value in strings(load(COMPOSE)) for m in re.findall(r"\$\{([A-Z0-9_]+):\?", value)}
    example = dict(line.split("=", 1) for line in (DEPLOY / ".env.example").read_text().splitlines()
                   if line and not line.startswith("#"))
    assert required and required <= set(example)
    assert all(value == "" for value in example.values())  # placeholders, never a real value
    assert "deploy/.env" in (DEPLOY.parent / ".gitignore").read_text().split()


def test_compose_sets_only_environment_variables_the_code_reads():
    for name, service in peerledger_services().items():
        assert set(service["environment"]) <= set(common.ENVIRONMENT), name
        assert urlsplit(service["environment"]["PEERLEDGER_DB"]).password is None  # the password is PGPASSWORD


def test_prometheus_scrapes_every_compose_peerledger_service_on_the_port_it_serves():
    services = peerledger_services()
    scraped: dict[str, int] = {}
    for job in load(PROMETHEUS)["scrape_configs"]:
        for sd in job.get("dns_sd_configs", ()):
            for target in sd["names"]:
                scraped[target] = sd["port"]
        for static in job.get("static_configs", ()):
            for target in static["targets"]:
                host, port = target.rsplit(":", 1)
                scraped[host] = int(port)
    assert scraped == {name: served_port(s["command"]) for name, s in services.items()}


# -- Kubernetes ----------------------------------------------------------------------


def test_kustomization_lists_every_manifest_but_the_secret_example():
    listed = set(load(K8S / "kustomization.yaml")["resources"])
    assert listed == {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml", "secret.example.yaml"}
    assert not any("namespace" in obj["metadata"] for obj in k8s_objects())  # namespace-agnostic


def test_k8s_runs_the_same_process_types_as_compose_with_the_same_flags():
    compose = sorted(parse(s["command"]).command for s in peerledger_services().values())
    k8s = sorted(parse(c["args"]).command for _, c in k8s_containers())
    assert k8s == compose
    by_command = {parse(s["command"]).command: vars(parse(s["command"])) for s in peerledger_services().values()}
    for _, container in k8s_containers():
        args = vars(parse(container["args"]))
        assert {k: v for k, v in args.items() if k not in ("db", "func")} == {
            k: v for k, v in by_command[args["command"]].items() if k not in ("db", "func")}


def test_k8s_probes_readyz_and_healthz_on_the_port_each_process_serves():
    for deployment, container in k8s_containers():
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        served = served_port(container["args"])
        for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
            get = container[probe]["httpGet"]
            assert get["path"] == path, deployment["metadata"]["name"]
            assert ports[get["port"]] == served, deployment["metadata"]["name"]
        annotations = deployment["spec"]["template"]["metadata"]["annotations"]
        assert int(annotations["prometheus.io/port"]) == served and annotations["prometheus.io/scrape"] == "true"


def test_k8s_containers_have_resource_requests_and_limits():
    for deployment, container in k8s_containers():
        resources = container["resources"]
        for kind in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(resources[kind]), deployment["metadata"]["name"]


def test_k8s_environment_comes_from_the_configmap_and_the_secret_and_the_code_reads_all_of_it():
    objects = {(o["kind"], o["metadata"]["name"]): o for o in k8s_objects()}
    for deployment, container in k8s_containers():
        names = set()
        for source in container.get("envFrom", ()):
            configmap = objects[("ConfigMap", source["configMapRef"]["name"])]
            names |= set(configmap["data"])
        for var in container.get("env", ()):
            secret = objects[("Secret", var["valueFrom"]["secretKeyRef"]["name"])]  # secrets by reference only
            assert var["valueFrom"]["secretKeyRef"]["key"] in secret["stringData"]
            names.add(var["name"])
        assert "PGPASSWORD" in names and names <= set(common.ENVIRONMENT), deployment["metadata"]["name"]


def test_the_secret_example_holds_only_a_placeholder():
    (secret,) = [o for o in k8s_objects() if o["kind"] == "Secret"]
    assert all("CHANGE-ME" in value for value in secret["stringData"].values())


def test_a_pod_disruption_budget_covers_the_consumers_and_a_service_the_api():
    objects = k8s_objects()
    deployments = {parse(c["args"]).command: d for d, c in k8s_containers()}

    def pods_of(command: str) -> dict[str, str]:
        return deployments[command]["spec"]["template"]["metadata"]["labels"]

    (pdb,) = [o for o in objects if o["kind"] == "PodDisruptionBudget"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pods_of("consume").items()
    (service,) = [o for o in objects if o["kind"] == "Service" and o["spec"].get("type") != "ExternalName"]
    assert service["spec"]["selector"].items() <= pods_of("serve").items()
    (api,) = [c for d, c in k8s_containers() if parse(c["args"]).command == "serve"]
    assert {p["name"] for p in api["ports"]} >= {service["spec"]["ports"][0]["targetPort"]}


def test_kafka_and_postgres_are_external_services_the_workers_name():
    external = {o["metadata"]["name"] for o in k8s_objects()
                if o["kind"] == "Service" and o["spec"].get("type") == "ExternalName"}
    assert external == {"kafka", "postgres"}
    configmap = next(o for o in k8s_objects() if o["kind"] == "ConfigMap")
    assert urlsplit(configmap["data"]["PEERLEDGER_DB"]).hostname == "postgres"
    for _, container in k8s_containers():
        args = parse(container["args"])
        if args.command == "consume":
            assert args.bootstrap_servers.split(":")[0] == "kafka"


# -- the environment the code reads -----------------------------------------------


def test_every_variable_in_the_environment_list_is_read_by_the_code(monkeypatch: pytest.MonkeyPatch):
    from ledger.audit import signing
    from ledger.ops import runtime
    from ledger.storage.store import DbUrl

    monkeypatch.setenv("PEERLEDGER_DB", "sqlite:///from-env.db")
    assert cli.parser().parse_args(["digest", "--platform", "p"]).db == "sqlite:///from-env.db"
    monkeypatch.setenv("PGUSER", "ledger-user")
    monkeypatch.setenv("PGPASSWORD", "from-env")
    assert DbUrl.parse("postgresql://db/ledger").pg == {
        "dbname": "ledger", "host": "db", "port": 5432, "user": "ledger-user", "password": "from-env"}
    monkeypatch.setenv(signing.KEY_ENV, "/keys/k.pem")
    assert str(signing.key_path(None)) == "/keys/k.pem"
    from ledger.webhooks import delivery

    monkeypatch.setenv(delivery.TIME_SCALE_ENV, "0.001")
    assert delivery.Settings.from_env().time_scale == 0.001
    assert set(common.ENVIRONMENT) == {"PEERLEDGER_DB", "PGUSER", "PGPASSWORD", signing.KEY_ENV, runtime.CACHE_ENV,
                                       delivery.TIME_SCALE_ENV}


# -- the Grafana dashboard ---------------------------------------------------------------

PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "offset", "bool", "and", "or",
                "unless", "inf", "nan"}


def exported_metric_names() -> set[str]:
    """Every series name the code's processes export: the default registry
    (ingestion, Kafka, projection, process and Python collectors) and the
    HTTP service's own registry, with the suffixes each type adds."""
    from prometheus_client import REGISTRY

    import ledger.ingest.projector  # noqa: F401
    import ledger.kafka.consumer  # noqa: F401  (registers nothing new, but imports every metric the consumer uses)
    from ledger.http.metrics import HttpMetrics

    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "summary": ("_sum", "_count"),
                "gauge": ("",), "info": ("_info",)}
    names = set()
    for registry in (REGISTRY, HttpMetrics().registry):
        for family in registry.collect():
            names |= {family.name + s for s in suffixes.get(family.type, ("",))}
    return names


def promql_metric_names(expr: str) -> set[str]:
    """The series names a PromQL expression selects: identifiers that are not
    functions, keywords, label names (in {...} or by/without/on/ignoring (...))
    or range/duration text."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # string literals
    expr = re.sub(r"\{[^}]*\}", "", expr)  # label matchers
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # ranges
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)
    names = set()
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", expr):
        rest = expr[match.end():].lstrip()
        if rest.startswith("(") or match.group(0).lower() in PROMQL_WORDS:
            continue
        names.add(match.group(0))
    return names


def dashboard_exprs() -> list[str]:
    exprs = []
    for path in DASHBOARDS.glob("*.json"):
        for panel in json.loads(path.read_text())["panels"]:
            exprs += [t["expr"] for t in panel.get("targets", ())]
    return exprs


def test_promql_metric_names_skips_functions_labels_and_ranges():
    assert promql_metric_names(
        'histogram_quantile(0.99, sum by (le, route) (rate(peerledger_x_bucket{job=~"a.*"}[$__rate_interval])))'
    ) == {"peerledger_x_bucket"}
    assert promql_metric_names("sum(rate(a_total[5m])) / sum(rate(b_count[5m]))") == {"a_total", "b_count"}


def test_every_metric_the_dashboard_queries_is_exported_by_the_code():
    exprs = dashboard_exprs()
    assert len(exprs) >= 10
    exported = exported_metric_names()
    for expr in exprs:
        names = promql_metric_names(expr)
        assert names, expr
        assert names <= exported, f"{expr}: {sorted(names - exported)} not exported"


def test_the_dashboard_shows_ingest_kafka_projection_and_api_metrics():
    queried = set().union(*(promql_metric_names(e) for e in dashboard_exprs()))
    for prefix in ("peerledger_events_", "peerledger_kafka_", "peerledger_projection_", "peerledger_http_"):
        assert any(name.startswith(prefix) for name in queried), prefix


# -- PostgreSQL settings ------------------------------------------------------------

PG_CONF = DEPLOY / "postgresql.conf"


def pg_conf_settings() -> dict[str, str]:
    settings = {}
    for line in PG_CONF.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, value = line.partition("=")
            settings[name.strip()] = value.strip().strip("'")
    return settings


def test_compose_postgres_runs_with_the_ledgers_settings_file():
    postgres = compose_services()["postgres"]
    assert "config_file=/etc/postgresql/peerledger.conf" in postgres["command"]
    assert postgres["configs"] == [{"source": "postgresql-conf", "target": "/etc/postgresql/peerledger.conf"}]
    assert load(COMPOSE)["configs"]["postgresql-conf"]["file"] == "./postgresql.conf"


def test_the_postgres_settings_keep_every_acknowledged_commit_durable():
    settings = pg_conf_settings()
    assert {name: settings[name] for name in ("fsync", "synchronous_commit", "full_page_writes")} == \
        {"fsync": "on", "synchronous_commit": "on", "full_page_writes": "on"}


@pytest.mark.postgres
def test_every_postgres_setting_is_one_the_server_knows_with_a_value_it_takes():
    from conftest import _pg_admin

    conn, _ = _pg_admin()
    with conn:
        known = {name: (vartype, enumvals) for name, vartype, enumvals in
                 conn.execute("SELECT name, vartype, enumvals FROM pg_settings").fetchall()}
    for name, value in pg_conf_settings().items():
        assert name in known, f"{name} is not a PostgreSQL setting"
        vartype, enumvals = known[name]
        if vartype == "enum":
            assert value in enumvals, (name, value, enumvals)
        elif vartype == "bool":
            assert value in ("on", "off"), (name, value)
        elif vartype in ("integer", "real"):
            assert re.fullmatch(r"\d+(\.\d+)?(kB|MB|GB|TB|ms|s|min|h|d)?", value), (name, value)
