"""deploy/: Kubernetes manifests, compose file and Dockerfile, checked offline.

Kubernetes documents are validated against the schemas that `kubernetes-validate` ships (strict:
unknown fields are errors) for a pinned Kubernetes version; the compose file against the
compose-spec schema vendored inside `check-jsonschema`. No Docker engine, no cluster, no network.
"""

from __future__ import annotations

import importlib.util
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
COMPOSE = DEPLOY / "docker-compose.yaml"
DOCKERFILE = DEPLOY / "Dockerfile"
SA_SCRIPT = DEPLOY / "temporal" / "register-search-attributes.sh"

K8S_VERSION = "1.33.0"
SIGNOFF_NS = "signoff"
TEMPORAL_NS = "temporal"
TEMPORAL_FRONTEND = {
    "app.kubernetes.io/name": "temporal",
    "app.kubernetes.io/component": "frontend",
}
SEARCH_ATTRIBUTES = {
    "SignoffStatus": "Keyword",
    "SignoffAction": "Keyword",
    "SignoffTarget": "Keyword",
    "SignoffRequester": "Keyword",
    "SignoffRisk": "Keyword",
    "SignoffEscalation": "Int",
    "SignoffGroups": "KeywordList",
    "SignoffBreakGlass": "Keyword",
    "SignoffExpires": "Datetime",
    "SignoffWindowStatus": "Keyword",
    "SignoffWindowHolder": "Keyword",
    "SignoffWindowExpires": "Datetime",
    "SignoffActiveUntil": "Datetime",
}
CLUSTER_SCOPED = {"Namespace"}

Doc = dict[str, Any]


# --- loading -------------------------------------------------------------------------------


def manifest_files() -> list[Path]:
    return sorted(p for p in K8S.rglob("*.y*ml") if p.name != "kustomization.yaml")


def load_docs(path: Path) -> list[Doc]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def all_docs() -> list[tuple[str, Doc]]:
    return [(p.name, d) for p in manifest_files() for d in load_docs(p)]


def docs_of(kind: str) -> list[Doc]:
    return [d for _, d in all_docs() if d["kind"] == kind]


def one(kind: str, name: str) -> Doc:
    found = [d for d in docs_of(kind) if d["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind}/{name}, found {len(found)}"
    return found[0]


def workloads() -> list[Doc]:
    return docs_of("Deployment") + docs_of("Job")


def containers(workload: Doc) -> list[Doc]:
    spec = workload["spec"]["template"]["spec"]
    return list(spec.get("initContainers", [])) + list(spec["containers"])


def selector_matches(selector: Doc, labels: dict[str, str]) -> bool:
    """Kubernetes LabelSelector semantics (matchLabels and matchExpressions)."""
    for key, value in selector.get("matchLabels", {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions", []):
        key, op, values = expr["key"], expr["operator"], expr.get("values", [])
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and labels.get(key) in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


def pod_labels(component: str) -> dict[str, str]:
    matches = [
        w["spec"]["template"]["metadata"]["labels"]
        for w in workloads()
        if w["spec"]["template"]["metadata"]["labels"].get("app.kubernetes.io/component")
        == component
    ]
    assert matches, f"no workload with component {component}"
    return dict(matches[0])


def k8s_validate(doc: Doc) -> None:
    kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


# --- schema validation -----------------------------------------------------------------------


def test_manifests_exist() -> None:
    kinds = {d["kind"] for _, d in all_docs()}
    assert {
        "Deployment",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        "Service",
        "Ingress",
        "ConfigMap",
        "Secret",
        "NetworkPolicy",
        "Job",
    } <= kinds


@pytest.mark.parametrize(
    ("filename", "index"),
    [(p.name, i) for p in manifest_files() for i in range(len(load_docs(p)))],
)
def test_k8s_manifest_valid_against_schema(filename: str, index: int) -> None:
    doc = load_docs(K8S / filename)[index]
    k8s_validate(doc)


def test_k8s_validator_rejects_unknown_and_mistyped_fields() -> None:
    deployment = one("Deployment", "signoff-worker")
    bad = json.loads(json.dumps(deployment))
    bad["spec"]["template"]["spec"]["containers"][0]["resource"] = {}  # typo of "resources"
    with pytest.raises(jsonschema.ValidationError):
        k8s_validate(bad)
    bad = json.loads(json.dumps(deployment))
    bad["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] = "300"
    with pytest.raises(jsonschema.ValidationError):
        k8s_validate(bad)


def test_kustomization_lists_every_manifest() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert kustomization["kind"] == "Kustomization"
    listed = set(kustomization["resources"])
    on_disk = {str(p.relative_to(K8S)) for p in manifest_files()}
    assert listed == on_disk
    # Each resource names its namespace; a top-level one would also move the Temporal policy.
    assert "namespace" not in kustomization


def compose_schema() -> Doc:
    # Located, not imported: importing check_jsonschema sets up its download cache.
    spec = importlib.util.find_spec("check_jsonschema")
    assert spec is not None, "dev extra: check-jsonschema"
    assert spec.origin is not None
    path = Path(spec.origin).parent / "builtin_schemas" / "vendor" / "compose-spec.json"
    schema: Doc = json.loads(path.read_text())
    return schema


def compose_errors(doc: Doc) -> list[str]:
    validator = jsonschema.Draft202012Validator(
        compose_schema(), format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    )
    return [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(doc)]


def load_compose() -> Doc:
    doc: Doc = yaml.safe_load(COMPOSE.read_text())
    return doc


def test_compose_valid_against_compose_spec() -> None:
    assert compose_errors(load_compose()) == []


def test_compose_schema_rejects_unknown_keys() -> None:
    doc = load_compose()
    doc["services"]["worker"]["replica"] = 3  # not a compose key
    assert compose_errors(doc)


# --- structure: Kubernetes -------------------------------------------------------------------


def test_every_namespaced_resource_names_its_namespace() -> None:
    for filename, doc in all_docs():
        if doc["kind"] in CLUSTER_SCOPED:
            continue
        expected = TEMPORAL_NS if filename == "networkpolicy-temporal.yaml" else SIGNOFF_NS
        assert doc["metadata"].get("namespace") == expected, (filename, doc["metadata"]["name"])


@pytest.mark.parametrize("name", ["signoff-worker", "signoff-gateway"])
def test_deployment_containers_hardened(name: str) -> None:
    deployment = one("Deployment", name)
    pod = deployment["spec"]["template"]["spec"]
    pod_sc = pod.get("securityContext", {})
    assert pod.get("automountServiceAccountToken") is False
    for container in containers(deployment):
        sc = {**pod_sc, **container.get("securityContext", {})}
        assert sc.get("runAsNonRoot") is True, container["name"]
        assert sc.get("runAsUser", 0) != 0, container["name"]
        assert sc.get("readOnlyRootFilesystem") is True, container["name"]
        assert sc.get("allowPrivilegeEscalation") is False, container["name"]
        assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
        limits = container.get("resources", {}).get("limits", {})
        requests = container.get("resources", {}).get("requests", {})
        assert {"cpu", "memory"} <= limits.keys(), container["name"]
        assert {"cpu", "memory"} <= requests.keys(), container["name"]
        assert "livenessProbe" in container, container["name"]
        assert "readinessProbe" in container, container["name"]


def test_jobs_hardened() -> None:
    jobs = docs_of("Job")
    assert {j["metadata"]["name"] for j in jobs} == {
        "signoff-db-migrate",
        "signoff-temporal-search-attributes",
    }
    for job in jobs:
        pod_sc = job["spec"]["template"]["spec"].get("securityContext", {})
        for container in containers(job):
            sc = {**pod_sc, **container.get("securityContext", {})}
            assert sc.get("runAsNonRoot") is True
            assert sc.get("readOnlyRootFilesystem") is True
            assert "limits" in container.get("resources", {})


def test_worker_shutdown_grace_and_autoscaling() -> None:
    worker = one("Deployment", "signoff-worker")
    assert worker["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] >= 120
    # the HPA owns the replica count
    assert "replicas" not in worker["spec"]
    hpa = one("HorizontalPodAutoscaler", "signoff-worker")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "signoff-worker",
    }
    assert hpa["spec"]["minReplicas"] >= 2
    pdb = one("PodDisruptionBudget", "signoff-worker")
    assert selector_matches(pdb["spec"]["selector"], pod_labels("worker"))
    assert selector_matches(worker["spec"]["selector"], pod_labels("worker"))


def test_gateway_service_and_ingress_wiring() -> None:
    gateway = one("Deployment", "signoff-gateway")
    service = one("Service", "signoff-gateway")
    labels = gateway["spec"]["template"]["metadata"]["labels"]
    assert selector_matches({"matchLabels": service["spec"]["selector"]}, labels)
    port_names = {p["name"] for c in containers(gateway) for p in c.get("ports", [])}
    assert {p["targetPort"] for p in service["spec"]["ports"]} <= port_names
    ingress = one("Ingress", "signoff-gateway")
    paths = [p for rule in ingress["spec"]["rules"] for p in rule["http"]["paths"]]
    assert {p["path"] for p in paths} == {"/v1", "/slack/interactions", "/teams/messages"}
    for path in paths:
        backend = path["backend"]["service"]
        assert backend["name"] == "signoff-gateway"
        assert backend["port"]["name"] in {p["name"] for p in service["spec"]["ports"]}
    # metrics and health endpoints are never routed publicly
    assert not any(p["path"] in {"/", "/metrics", "/healthz", "/readyz"} for p in paths)


def test_config_mounted_where_settings_point() -> None:
    env = one("ConfigMap", "signoff-env")["data"]
    for name in ("signoff-worker", "signoff-gateway"):
        deployment = one("Deployment", name)
        volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
        mounted: dict[str, str] = {}
        for container in containers(deployment):
            for mount in container.get("volumeMounts", []):
                volume = volumes[mount["name"]]
                sources = volume.get("projected", {}).get("sources", [])
                for source in sources:
                    cm = one("ConfigMap", source["configMap"]["name"])
                    for key in cm["data"]:
                        mounted[f"{mount['mountPath']}/{key}"] = cm["metadata"]["name"]
        for setting in ("SIGNOFF_POLICY", "SIGNOFF_DIRECTORY", "SIGNOFF_TARGETS"):
            assert env[setting] in mounted, (name, setting)


def test_every_referenced_configmap_and_secret_exists() -> None:
    configmaps = {d["metadata"]["name"]: d for d in docs_of("ConfigMap")}
    secrets = {d["metadata"]["name"]: d for d in docs_of("Secret")}
    for workload in workloads():
        for container in containers(workload):
            for item in container.get("envFrom", []):
                if "configMapRef" in item:
                    assert item["configMapRef"]["name"] in configmaps
                else:
                    assert item["secretRef"]["name"] in secrets
            for var in container.get("env", []):
                ref = var.get("valueFrom", {})
                if "secretKeyRef" in ref:
                    key_ref = ref["secretKeyRef"]
                    if key_ref.get("optional"):
                        continue
                    assert key_ref["key"] in secrets[key_ref["name"]]["stringData"], var["name"]
                if "configMapKeyRef" in ref:
                    key_ref = ref["configMapKeyRef"]
                    assert key_ref["key"] in configmaps[key_ref["name"]]["data"], var["name"]


def test_secret_templates_hold_placeholders_only() -> None:
    for secret in docs_of("Secret"):
        assert secret["metadata"]["annotations"]["signoff.dev/placeholder"] == "true"
        assert "data" not in secret  # base64 would hide a real value from review
        for key, value in secret["stringData"].items():
            assert "REPLACE_ME" in value, (secret["metadata"]["name"], key)


def netpol_allows(policy: Doc, peer: Doc, namespace: str, labels: dict[str, str]) -> bool:
    """Whether an ingress `from` / egress `to` peer admits a pod (namespace labels: name only)."""
    ns_selector = peer.get("namespaceSelector")
    if ns_selector is None:
        if namespace != policy["metadata"]["namespace"]:
            return False
    elif not selector_matches(ns_selector, {"kubernetes.io/metadata.name": namespace}):
        return False
    return selector_matches(peer.get("podSelector", {}), labels)


def test_only_signoff_worker_and_gateway_reach_temporal_frontend() -> None:
    policies = [
        p
        for p in docs_of("NetworkPolicy")
        if p["metadata"]["namespace"] == TEMPORAL_NS
        and selector_matches(p["spec"]["podSelector"], TEMPORAL_FRONTEND)
    ]
    assert policies, "no NetworkPolicy selects the Temporal frontend"

    def admitted(namespace: str, labels: dict[str, str]) -> bool:
        return any(
            netpol_allows(policy, peer, namespace, labels)
            for policy in policies
            for rule in policy["spec"].get("ingress", [])
            for peer in rule.get("from", [])
        )

    for component in ("worker", "gateway"):
        assert admitted(SIGNOFF_NS, pod_labels(component)), component
    assert not admitted(SIGNOFF_NS, pod_labels("migrate"))
    assert not admitted("default", pod_labels("worker"))
    assert not admitted("other", {"app": "anything"})
    assert admitted(TEMPORAL_NS, {"app.kubernetes.io/component": "history"})


def test_signoff_egress_to_temporal_frontend_only_for_clients() -> None:
    policies = [p for p in docs_of("NetworkPolicy") if p["metadata"]["namespace"] == SIGNOFF_NS]
    deny = [p for p in policies if p["spec"]["podSelector"] == {}]
    assert deny, "no default-deny policy in the signoff namespace"
    assert set(deny[0]["spec"]["policyTypes"]) == {"Ingress", "Egress"}
    assert "ingress" not in deny[0]["spec"]
    assert "egress" not in deny[0]["spec"]

    def may_reach_frontend(labels: dict[str, str]) -> bool:
        return any(
            selector_matches(policy["spec"]["podSelector"], labels)
            and any(
                netpol_allows(policy, peer, TEMPORAL_NS, TEMPORAL_FRONTEND)
                for peer in rule.get("to", [{}])
            )
            and any(p.get("port") == 7233 for p in rule.get("ports", [{"port": 7233}]))
            for policy in policies
            for rule in policy["spec"].get("egress", [])
        )

    assert may_reach_frontend(pod_labels("worker"))
    assert may_reach_frontend(pod_labels("gateway"))
    assert not may_reach_frontend(pod_labels("migrate"))


def test_search_attribute_job_registers_every_attribute() -> None:
    script = SA_SCRIPT.read_text()
    registered = dict(re.findall(r"^\s+(Signoff\w+)=(\w+)", script, flags=re.MULTILINE))
    assert registered == SEARCH_ATTRIBUTES
    assert "temporal operator search-attribute create" in script
    # the Kubernetes Job runs the very same script
    cm = one("ConfigMap", "signoff-temporal-setup")
    assert cm["data"]["register-search-attributes.sh"] == script
    job = one("Job", "signoff-temporal-search-attributes")
    (container,) = containers(job)
    assert container["image"].startswith("temporalio/admin-tools:")
    volumes = job["spec"]["template"]["spec"]["volumes"]
    assert {"name": "scripts", "configMap": {"name": "signoff-temporal-setup"}} in volumes


def test_migrate_job_uses_admin_url_and_apps_do_not() -> None:
    def db_url_key(workload: Doc) -> str:
        (var,) = [
            v
            for c in containers(workload)
            for v in c.get("env", [])
            if v["name"] == "SIGNOFF_DATABASE_URL"
        ]
        return str(var["valueFrom"]["secretKeyRef"]["key"])

    migrate = one("Job", "signoff-db-migrate")
    assert containers(migrate)[0]["args"] == ["db", "migrate"]
    assert db_url_key(migrate) == "admin-url"
    for name in ("signoff-worker", "signoff-gateway"):
        assert db_url_key(one("Deployment", name)) == "worker-url"


# --- structure: compose ----------------------------------------------------------------------


def test_compose_services() -> None:
    services = load_compose()["services"]
    assert {"temporal", "temporal-ui", "postgres", "worker", "gateway"} <= services.keys()
    assert services["temporal"]["image"].split(":")[0] == "temporalio/auto-setup"
    assert services["temporal"]["environment"]["DB"] == "postgres12"
    assert services["temporal-ui"]["image"].startswith("temporalio/ui:")
    for name, service in services.items():
        # `${VAR:-default}` -> default: the image a plain `docker compose up` runs
        image = re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", service.get("image", ""))
        if image.startswith(("temporalio/", "postgres")):
            tag = image.partition(":")[2]
            assert re.fullmatch(r"\d+(\.\d+)*(-[\w.-]+)?", tag), f"{name}: {image} is not pinned"


def test_compose_worker_scales() -> None:
    services = load_compose()["services"]
    worker = services["worker"]
    # fixed names or host ports would break `docker compose up --scale worker=3`
    assert "container_name" not in worker
    assert "ports" not in worker
    assert worker["command"] == ["worker"]
    assert services["gateway"]["command"] == ["gateway"]
    for name in ("worker", "gateway", "temporal", "postgres"):
        assert "healthcheck" in services[name], name
    for name in ("worker", "gateway"):
        deps = services[name]["depends_on"]
        assert deps["migrate"]["condition"] == "service_completed_successfully"
        assert deps["temporal-setup"]["condition"] == "service_completed_successfully"


def test_compose_config_and_search_attributes() -> None:
    services = load_compose()["services"]
    for name in ("worker", "gateway"):
        env = services[name]["environment"]
        mounts = services[name]["volumes"]
        assert any(
            m["source"] == "../policies/examples" and m["target"] == "/etc/signoff" for m in mounts
        )
        assert env["SIGNOFF_POLICY"].startswith("/etc/signoff/")
        assert env["SIGNOFF_TEMPORAL_ADDRESS"] == "temporal:7233"
    setup = services["temporal-setup"]
    assert setup["image"].startswith("temporalio/admin-tools:")
    assert any("register-search-attributes.sh" in v for v in setup["volumes"])
    assert (DEPLOY / "temporal" / "register-search-attributes.sh").is_file()


# --- structure: Dockerfile -------------------------------------------------------------------


def dockerfile_stages() -> Iterator[list[tuple[str, str]]]:
    """Yield each build stage as (INSTRUCTION, arguments), continuation lines joined."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    stage: list[tuple[str, str]] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        instruction, _, args = line.partition(" ")
        if instruction.upper() == "FROM" and stage:
            yield stage
            stage = []
        stage.append((instruction.upper(), args.strip()))
    if stage:
        yield stage


def test_dockerfile_multi_stage_non_root() -> None:
    stages = [s for s in dockerfile_stages() if s[0][0] == "FROM"]
    assert len(stages) >= 2, "expected a builder and a runtime stage"
    final = stages[-1]
    users = [args for instr, args in final if instr == "USER"]
    assert users, "final stage sets no USER"
    user = users[-1].split(":")[0]
    assert user not in {"root", "0"}
    entrypoints = [args for instr, args in final if instr == "ENTRYPOINT"]
    assert entrypoints
    assert json.loads(entrypoints[-1]) == ["signoff"]
    assert any(instr == "HEALTHCHECK" and "/healthz" in args for instr, args in final)
    # only the runtime dependencies: the dev extra never reaches the image
    assert "[dev]" not in DOCKERFILE.read_text()
    assert any(instr == "COPY" and "--from=" in args for instr, args in final)
