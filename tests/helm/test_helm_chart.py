"""The Helm chart, rendered and linted by the real Helm engine.

`helm_python` embeds Helm's Go SDK (v4) as a shared library, so these tests run the same
template engine, schema validation and linter as `helm install`, without a binary or a cluster.
Every rendered manifest is then validated with `kubernetes_validate` (strict: unknown fields
are errors) against the oldest Kubernetes the chart supports and the newest one the validator
knows. Custom resources (ServiceMonitor, PodMonitor, KEDA objects) have no schema there; they
are checked structurally below and said to be so.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import helm_python as helm
import kubernetes_validate
import pytest
import yaml
from kubernetes_validate.utils import latest_version

CHART_DIR = Path(__file__).resolve().parents[2] / "helm" / "tritonfleet"
RELEASE = "demo"
NAMESPACE = "ml"
STATEFULSET = "demo-tritonfleet-triton"
FULL = "demo-tritonfleet"
QUEUE_TIME_QUERY = (
    "sum(rate(nv_inference_queue_duration_us[1m])) / sum(rate(nv_inference_request_success[1m]))"
)
RESTRICTED = ["model-repository", "model-config", "shared-memory", "logging", "trace"]
# Kinds that come from CRDs; kubernetes_validate has no schema for them.
CRD_KINDS = {"ServiceMonitor", "PodMonitor", "ScaledObject", "TriggerAuthentication"}
MIN_KUBE = "1.27"  # Chart.yaml kubeVersion

Doc = dict[str, Any]

# Every gateway.config key, each set to a value other than the gateway's default.
GATEWAY_CONFIG: dict[str, Any] = {
    "auth": "off",
    "grpcDoor": "grpcio",
    "policy": "least-request",
    "maxBodyBytes": 1 << 20,
    "coldHoldS": 12.5,
    "retryAfterS": 9,
    "upstreamTimeoutS": 30,
    "connectTimeoutS": 0.5,
    "headerTimeoutS": 5,
    "idleTimeoutS": 60,
    "maxClientConnections": 1000,
    "maxPipelinedBytes": 2 << 20,
    "retryRatio": 0.1,
    "retryMinPerS": 2,
    "ejectAfterFailures": 5,
    "ejectBaseS": 2.5,
    "maxEjectedFraction": 0.25,
    "defaultMaxQueue": 64,
    "latencyTauS": 1.5,
    "signalIntervalS": 2,
    "signalMaxAgeS": 10,
    "adminHeaderGrpc": "x-admin-key",
    "h2MaxConcurrentStreams": 64,
    "h2InitialStreamWindowBytes": 1 << 20,
    "h2InitialConnectionWindowBytes": 8 << 20,
    "h2MaxFrameBytes": 1 << 16,
    "h2MaxHeaderListBytes": 32 << 10,
    "h2MaxContinuationFrames": 8,
    "h2MaxResetsPerS": 100,
    "h2MaxControlFramesPerS": 500,
    "h2MaxConsecutiveEmptyFrames": 2,
    "h2MaxOutboundControlFrames": 500,
    "h2MaxConnectionBufferBytes": 64 << 20,
    "h2StreamIdleTimeoutS": 120,
    "h2HpackCacheEntries": 32,
    "h2HpackCacheBytes": 1 << 17,
}

VARIATIONS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "gateway-config": {"gateway": {"config": GATEWAY_CONFIG}},
    "cpu-only": {"triton": {"gpu": {"count": 0}, "resources": {"requests": {"cpu": "2"}}}},
    "mig": {
        "triton": {
            "gpu": {"resource": "nvidia.com/mig-1g.10gb", "count": 1},
            "nodeSelector": {"nvidia.com/mig.config": "all-1g.10gb"},
            "tolerations": [
                {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
            ],
            "affinity": {
                "nodeAffinity": {
                    "requiredDuringSchedulingIgnoredDuringExecution": {
                        "nodeSelectorTerms": [
                            {
                                "matchExpressions": [
                                    {
                                        "key": "nvidia.com/gpu.product",
                                        "operator": "In",
                                        "values": ["NVIDIA-H100-80GB-HBM3"],
                                    }
                                ]
                            }
                        ]
                    }
                }
            },
        }
    },
    "servicemonitor": {
        "metrics": {"serviceMonitor": {"enabled": True}, "podMonitor": {"enabled": True}}
    },
    "keda": {
        "prometheus": {"url": "http://prometheus-operated.monitoring.svc:9090"},
        "autoscaling": {"enabled": True, "mode": "keda", "minReplicas": 1, "maxReplicas": 6},
    },
    "hpa": {
        "prometheus": {"url": "http://prometheus-operated.monitoring.svc:9090"},
        "autoscaling": {"enabled": True, "mode": "hpa"},
    },
    "external-prometheus": {
        "prometheus": {
            "url": "https://prometheus.example.com",
            "bearerTokenSecret": "prom-token",
        },
        "metrics": {"scrapeAnnotations": False},
        "autoscaling": {"enabled": True},
    },
    "scale-fleet": {
        "controlplane": {"scaleFleet": {"enabled": True, "minServers": 1, "maxServers": 6}},
    },
    "object-store": {
        "adminKey": {"existingSecret": "triton-admin", "secretKey": "key"},
        "apiToken": {"existingSecret": "tf-api", "secretKey": "token"},
        "triton": {
            "modelRepository": {
                "type": "objectStore",
                "objectStore": {"uri": "s3://models/prod", "credentialsSecret": "s3-creds"},
            },
            "tcmalloc": {"enabled": True},
            "capacityBytes": 68719476736,
            "replicasManagedExternally": True,
        },
        "controlplane": {"store": {"existingClaim": "tf-store"}},
    },
}


# ---------------------------------------------------------------- rendering helpers


@pytest.fixture(scope="module")
def chart() -> Iterator[helm.Chart]:
    with helm.Chart.load(CHART_DIR) as loaded:
        yield loaded


def render_raw(chart: helm.Chart, values: dict[str, Any] | None = None) -> dict[str, str]:
    return chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)


def render(chart: helm.Chart, values: dict[str, Any] | None = None) -> list[Doc]:
    docs: list[Doc] = []
    for path, text in sorted(render_raw(chart, values).items()):
        if not path.endswith(".yaml"):
            continue
        docs.extend(d for d in yaml.safe_load_all(text) if d)
    return docs


def only(docs: list[Doc], kind: str, name: str | None = None) -> Doc:
    found = [d for d in docs if d["kind"] == kind and name in (None, d["metadata"]["name"])]
    assert len(found) == 1, f"expected one {kind} {name or ''}, got {[kind_name(d) for d in found]}"
    return found[0]


def kinds(docs: list[Doc]) -> set[str]:
    return {d["kind"] for d in docs}


def kind_name(doc: Doc) -> str:
    return f"{doc['kind']}/{doc['metadata']['name']}"


def triton_container(docs: list[Doc]) -> Doc:
    sts = only(docs, "StatefulSet", STATEFULSET)
    (container,) = sts["spec"]["template"]["spec"]["containers"]
    return container


def env_of(container: Doc) -> dict[str, Doc]:
    return {e["name"]: e for e in container.get("env", [])}


def flag(args: list[str], name: str) -> str:
    values = [a.split("=", 1)[1] for a in args if a.startswith(f"{name}=")]
    assert len(values) == 1, f"{name} should be given exactly once, got {values}"
    return values[0]


def workloads(docs: list[Doc]) -> list[Doc]:
    return [d for d in docs if d["kind"] in {"Deployment", "StatefulSet"}]


# ---------------------------------------------------------------- lint and schema validity


@pytest.mark.parametrize("variation", sorted(VARIATIONS))
def test_lint_is_clean_in_strict_mode(variation: str) -> None:
    report = helm.lint(
        CHART_DIR, VARIATIONS[variation], strict=True, namespace=NAMESPACE, kube_version="v1.33.0"
    )
    assert report["errors"] == []
    # Severity 1 is info ("icon is recommended"); warnings and errors fail.
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert problems == []


_VALIDATED: set[tuple[str, str]] = set()


@pytest.mark.parametrize("kube_version", [MIN_KUBE, latest_version()])
@pytest.mark.parametrize("variation", sorted(VARIATIONS))
def test_every_manifest_is_valid_kubernetes(
    chart: helm.Chart, variation: str, kube_version: str
) -> None:
    docs = render(chart, VARIATIONS[variation])
    unchecked = set()
    for doc in docs:
        # Variations share most objects; validating an identical one twice proves nothing new.
        key = (kube_version, json.dumps(doc, sort_keys=True))
        if key in _VALIDATED:
            continue
        try:
            kubernetes_validate.validate(doc, kube_version, strict=True)
        except kubernetes_validate.SchemaNotFoundError:
            unchecked.add(doc["kind"])
        except kubernetes_validate.ValidationError as exc:
            path = "/".join(str(p) for p in exc.caught.absolute_path)
            pytest.fail(f"{kind_name(doc)} invalid for Kubernetes {kube_version} at {path}: {exc}")
        else:
            _VALIDATED.add(key)
        assert doc["metadata"].get("namespace", NAMESPACE) == NAMESPACE
    # Only custom resources may skip the schema check.
    assert unchecked <= CRD_KINDS


# ---------------------------------------------------------------- Triton StatefulSet


def test_triton_runs_explicit_mode_with_restricted_apis_on_both_protocols(
    chart: helm.Chart,
) -> None:
    docs = render(chart)
    container = triton_container(docs)
    args = container["args"]
    assert flag(args, "--model-control-mode") == "explicit"
    assert flag(args, "--strict-readiness") == "false"
    assert flag(args, "--metrics-config") == "summary_latencies=true"
    assert flag(args, "--metrics-port") == "8002"
    for name in ("--http-restricted-api", "--grpc-restricted-protocol"):
        apis, _, key = flag(args, name).partition(":")
        assert apis.split(",") == RESTRICTED, name
        assert key == "admin-key=$(TRITON_ADMIN_KEY)", name
    # $(TRITON_ADMIN_KEY) is expanded by the kubelet from the container's own env.
    ref = env_of(container)["TRITON_ADMIN_KEY"]["valueFrom"]["secretKeyRef"]
    secret = only(docs, "Secret", ref["name"])
    assert ref["key"] in secret["data"]
    assert secret["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"


@pytest.mark.parametrize("variation", sorted(VARIATIONS))
def test_no_variation_ever_polls_the_model_repository(chart: helm.Chart, variation: str) -> None:
    args = triton_container(render(chart, VARIATIONS[variation]))["args"]
    assert not any("poll" in a for a in args), args
    assert flag(args, "--model-control-mode") == "explicit"


def test_probes_live_on_live_ready_on_nonstrict_ready_and_startup_guards_both(
    chart: helm.Chart,
) -> None:
    container = triton_container(render(chart))
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": 8000, "grpc": 8001, "metrics": 8002}
    live, ready, startup = (
        container["livenessProbe"],
        container["readinessProbe"],
        container["startupProbe"],
    )
    assert live["httpGet"] == {"path": "/v2/health/live", "port": "http"}
    # /v2/health/ready only stays up during model loads because strict readiness is off.
    assert ready["httpGet"] == {"path": "/v2/health/ready", "port": "http"}
    assert "--strict-readiness=false" in container["args"]
    assert startup["httpGet"]["port"] == "http"
    # The startup probe must give a cold GPU server minutes, not seconds, before liveness acts.
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 300
    # Liveness must not kill a briefly busy server faster than readiness removes it.
    assert live["periodSeconds"] * live["failureThreshold"] > (
        ready["periodSeconds"] * ready["failureThreshold"]
    )


def test_triton_pod_is_non_root_with_memory_backed_shm(chart: helm.Chart) -> None:
    docs = render(chart)
    pod = only(docs, "StatefulSet", STATEFULSET)["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["automountServiceAccountToken"] is False
    container = pod["containers"][0]
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["dshm"]["emptyDir"] == {"medium": "Memory", "sizeLimit": "2Gi"}
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert mounts["/dev/shm"] == "dshm"
    assert mounts["/models"] == "models"
    claim = volumes["models"]["persistentVolumeClaim"]["claimName"]
    assert only(docs, "PersistentVolumeClaim", claim)["spec"]["accessModes"] == ["ReadWriteMany"]
    assert flag(container["args"], "--model-repository") == "/models"


def test_default_gpu_request_is_one_whole_gpu(chart: helm.Chart) -> None:
    docs = render(chart)
    resources = triton_container(docs)["resources"]
    assert resources["limits"]["nvidia.com/gpu"] == 1
    assert resources["requests"]["nvidia.com/gpu"] == 1
    labels = only(docs, "StatefulSet", STATEFULSET)["spec"]["template"]["metadata"]["labels"]
    assert labels["tritonfleet.io/accelerator"] == "gpu"


def test_cpu_only_requests_no_gpu(chart: helm.Chart) -> None:
    docs = render(chart, VARIATIONS["cpu-only"])
    container = triton_container(docs)
    assert "nvidia.com" not in json.dumps(container["resources"])
    assert flag(container["args"], "--allow-gpu-metrics") == "false"
    labels = only(docs, "StatefulSet", STATEFULSET)["spec"]["template"]["metadata"]["labels"]
    assert labels["tritonfleet.io/accelerator"] == "cpu"


def test_mig_requests_the_mig_resource_and_passes_scheduling_through(chart: helm.Chart) -> None:
    values = VARIATIONS["mig"]
    docs = render(chart, values)
    sts = only(docs, "StatefulSet", STATEFULSET)
    pod = sts["spec"]["template"]["spec"]
    resources = pod["containers"][0]["resources"]
    assert resources["limits"] == {"memory": "32Gi", "nvidia.com/mig-1g.10gb": 1}
    assert resources["requests"]["nvidia.com/mig-1g.10gb"] == 1
    assert "nvidia.com/gpu" not in json.dumps(resources)
    assert pod["nodeSelector"] == values["triton"]["nodeSelector"]
    assert pod["tolerations"] == values["triton"]["tolerations"]
    assert pod["affinity"] == values["triton"]["affinity"]
    assert sts["spec"]["template"]["metadata"]["labels"]["tritonfleet.io/accelerator"] == (
        "mig-1g.10gb"
    )


def test_object_store_existing_secret_tcmalloc_and_capacity(chart: helm.Chart) -> None:
    docs = render(chart, VARIATIONS["object-store"])
    sts = only(docs, "StatefulSet", STATEFULSET)
    container = triton_container(docs)
    assert flag(container["args"], "--model-repository") == "s3://models/prod"
    assert container["envFrom"] == [{"secretRef": {"name": "s3-creds"}}]
    env = env_of(container)
    assert env["LD_PRELOAD"]["value"].endswith("libtcmalloc.so.4")
    assert env["TRITON_ADMIN_KEY"]["valueFrom"]["secretKeyRef"] == {
        "name": "triton-admin",
        "key": "key",
    }
    assert "Secret" not in kinds(docs)  # the existing Secret is used, none generated
    assert "PersistentVolumeClaim" not in kinds(docs)  # no models PVC, existing store claim
    annotations = sts["spec"]["template"]["metadata"]["annotations"]
    assert annotations["tritonfleet.io/capacity-bytes"] == "68719476736"
    assert "replicas" not in sts["spec"]  # left to whoever scales it
    assert {v["name"] for v in sts["spec"]["template"]["spec"]["volumes"]} == {"dshm"}


def test_generated_admin_key_is_random_and_long(chart: helm.Chart) -> None:
    for name, key in ((f"{FULL}-admin-key", "admin-key"), (f"{FULL}-api-token", "api-token")):
        keys = {
            only(render(chart), "Secret", name)["data"][key],
            only(render(chart), "Secret", name)["data"][key],
        }
        assert len(keys) == 2
        assert all(len(k) >= 40 for k in keys)


def test_api_token_reaches_control_plane_and_gateway_and_gateway_auth_is_on(
    chart: helm.Chart,
) -> None:
    docs = render(chart)
    for name in (f"{FULL}-controlplane", f"{FULL}-gateway"):
        (container,) = only(docs, "Deployment", name)["spec"]["template"]["spec"]["containers"]
        env = env_of(container)
        assert env["TRITONFLEET_API_TOKEN"]["valueFrom"]["secretKeyRef"] == {
            "name": f"{FULL}-api-token",
            "key": "api-token",
        }
        if name.endswith("gateway"):
            assert env["TRITONFLEET_GATEWAY_AUTH"]["value"] == "tenants"
        else:
            assert env["TRITONFLEET_USAGE_FLUSH_INTERVAL_S"]["value"] == "5"
            assert env["TRITONFLEET_USAGE_RETENTION_DAYS"]["value"] == "400"
    docs = render(chart, {"gateway": {"config": {"auth": "off"}}})
    (container,) = only(docs, "Deployment", f"{FULL}-gateway")["spec"]["template"]["spec"][
        "containers"
    ]
    assert env_of(container)["TRITONFLEET_GATEWAY_AUTH"]["value"] == "off"


# ---------------------------------------------------------------- control plane and gateway


def test_every_workload_container_requests_cpu_and_memory(chart: helm.Chart) -> None:
    for variation in VARIATIONS.values():
        for workload in workloads(render(chart, variation)):
            for container in workload["spec"]["template"]["spec"]["containers"]:
                requests = container["resources"]["requests"]
                assert {"cpu", "memory"} <= set(requests), kind_name(workload)


def test_every_service_and_pdb_selects_a_workload(chart: helm.Chart) -> None:
    docs = render(chart)
    pod_labels = [w["spec"]["template"]["metadata"]["labels"] for w in workloads(docs)]

    def selects(selector: dict[str, str]) -> bool:
        return any(selector.items() <= labels.items() for labels in pod_labels)

    for doc in docs:
        if doc["kind"] == "Service":
            assert selects(doc["spec"]["selector"]), kind_name(doc)
        if doc["kind"] == "PodDisruptionBudget":
            assert selects(doc["spec"]["selector"]["matchLabels"]), kind_name(doc)
    assert {d["metadata"]["name"] for d in docs if d["kind"] == "PodDisruptionBudget"} == {
        STATEFULSET,
        "demo-tritonfleet-gateway",
    }


def test_control_plane_finds_exactly_the_triton_pods(chart: helm.Chart) -> None:
    docs = render(chart)
    deployment = only(docs, "Deployment", "demo-tritonfleet-controlplane")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    env = env_of(container)
    selector = dict(
        kv.split("=", 1) for kv in env["TRITONFLEET_K8S_LABEL_SELECTOR"]["value"].split(",")
    )
    for workload in workloads(docs):
        labels = workload["spec"]["template"]["metadata"]["labels"]
        matches = selector.items() <= labels.items()
        assert matches == (workload["kind"] == "StatefulSet"), kind_name(workload)
    assert env["TRITONFLEET_K8S_STATEFULSET"]["value"] == STATEFULSET
    assert env["TRITONFLEET_K8S_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == (
        "metadata.namespace"
    )
    assert container["args"][0] == "controlplane"


def test_control_plane_store_is_a_kept_pvc_with_a_single_writer(chart: helm.Chart) -> None:
    docs = render(chart)
    deployment = only(docs, "Deployment", "demo-tritonfleet-controlplane")
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    pod = deployment["spec"]["template"]["spec"]
    claim = next(v for v in pod["volumes"] if v["name"] == "store")["persistentVolumeClaim"]
    pvc = only(docs, "PersistentVolumeClaim", claim["claimName"])
    assert pvc["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert pvc["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    env = env_of(pod["containers"][0])
    mount = next(m for m in pod["containers"][0]["volumeMounts"] if m["name"] == "store")
    assert env["TRITONFLEET_STORE_PATH"]["value"].startswith(mount["mountPath"] + "/")


def test_image_tag_defaults_to_app_version_and_args_come_from_values(chart: helm.Chart) -> None:
    docs = render(chart, {"gateway": {"args": ["gateway", "serve"]}})
    gateway = only(docs, "Deployment", "demo-tritonfleet-gateway")
    container = gateway["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == f"ghcr.io/tritonfleet/tritonfleet:{chart.metadata['appVersion']}"
    assert container["args"] == ["gateway", "serve"]


# ---------------------------------------------------------------- RBAC


def test_rbac_is_namespaced_and_no_wider_than_needed(chart: helm.Chart) -> None:
    docs = render(chart)
    assert not kinds(docs) & {"ClusterRole", "ClusterRoleBinding"}
    roles = {d["metadata"]["name"]: d["rules"] for d in docs if d["kind"] == "Role"}
    for rules in roles.values():
        for rule in rules:
            for field in ("apiGroups", "resources", "verbs", "resourceNames"):
                assert "*" not in rule.get(field, []), rule
            assert not set(rule["verbs"]) & {"create", "update", "delete", "deletecollection"}

    def grants(role: str) -> set[tuple[str, str, str, str]]:
        return {
            (group, resource, verb, ",".join(rule.get("resourceNames", [])))
            for rule in roles[role]
            for group in rule["apiGroups"]
            for resource in rule["resources"]
            for verb in rule["verbs"]
        }

    read = {
        (group, resource, verb, "")
        for group, resource in (("", "pods"), ("discovery.k8s.io", "endpointslices"))
        for verb in ("get", "list", "watch")
    }
    scale = {("apps", "statefulsets/scale", verb, STATEFULSET) for verb in ("get", "patch")}
    assert grants("demo-tritonfleet-controlplane") == read | scale
    assert grants("demo-tritonfleet-gateway") == read

    # Each Deployment runs as the ServiceAccount its Role is bound to.
    bindings = {d["metadata"]["name"]: d for d in docs if d["kind"] == "RoleBinding"}
    for deployment in (d for d in docs if d["kind"] == "Deployment"):
        account = deployment["spec"]["template"]["spec"]["serviceAccountName"]
        binding = bindings[account]
        assert binding["roleRef"] == {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "Role",
            "name": account,
        }
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": account, "namespace": NAMESPACE}
        ]


# ---------------------------------------------------------------- Prometheus and autoscaling


def test_scrape_annotations_point_at_the_metrics_port(chart: helm.Chart) -> None:
    docs = render(chart)
    sts = only(docs, "StatefulSet", STATEFULSET)
    annotations = sts["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == "8002"
    off = render(chart, {"metrics": {"scrapeAnnotations": False}})
    sts_off = only(off, "StatefulSet", STATEFULSET)
    assert "prometheus.io/scrape" not in sts_off["spec"]["template"]["metadata"]["annotations"]


def test_monitoring_and_autoscaling_are_off_by_default(chart: helm.Chart) -> None:
    docs = render(chart)
    assert not kinds(docs) & (CRD_KINDS | {"HorizontalPodAutoscaler"})
    assert only(docs, "StatefulSet", STATEFULSET)["spec"]["replicas"] == 2


def test_service_monitor_scrapes_the_triton_metrics_port(chart: helm.Chart) -> None:
    docs = render(chart, VARIATIONS["servicemonitor"])
    monitor = only(docs, "ServiceMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    service = only(docs, "Service", STATEFULSET)
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    )
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}
    assert endpoint["port"] == "metrics"
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    pod_monitors = [d for d in docs if d["kind"] == "PodMonitor"]
    assert {m["metadata"]["name"] for m in pod_monitors} == {
        "demo-tritonfleet-controlplane",
        "demo-tritonfleet-gateway",
    }
    for monitor in pod_monitors:
        assert monitor["spec"]["podMetricsEndpoints"][0]["port"] == "http"


def test_keda_scales_the_statefulset_on_queue_time_per_request(chart: helm.Chart) -> None:
    docs = render(chart, VARIATIONS["keda"])
    scaled = only(docs, "ScaledObject")
    assert scaled["apiVersion"] == "keda.sh/v1alpha1"
    assert scaled["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "name": STATEFULSET,
    }
    assert (scaled["spec"]["minReplicaCount"], scaled["spec"]["maxReplicaCount"]) == (1, 6)
    (trigger,) = scaled["spec"]["triggers"]
    assert trigger["type"] == "prometheus"
    assert trigger["metricType"] == "Value"  # a fleet-wide ratio, not per pod
    assert trigger["metadata"]["query"] == QUEUE_TIME_QUERY
    assert trigger["metadata"]["serverAddress"] == "http://prometheus-operated.monitoring.svc:9090"
    assert trigger["metadata"]["threshold"] == "20000"
    # Helm must not reset the size KEDA chose on every upgrade.
    assert "replicas" not in only(docs, "StatefulSet", STATEFULSET)["spec"]


def test_hpa_mode_targets_the_external_queue_time_metric(chart: helm.Chart) -> None:
    docs = render(chart, VARIATIONS["hpa"])
    hpa = only(docs, "HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"]["name"] == STATEFULSET
    (metric,) = hpa["spec"]["metrics"]
    assert metric["external"]["metric"]["name"] == "tritonfleet_queue_time_per_request_us"
    assert hpa["metadata"]["annotations"]["tritonfleet.io/metric-query"] == QUEUE_TIME_QUERY
    assert "ScaledObject" not in kinds(docs)


def test_control_plane_scales_the_fleet_only_when_asked(chart: helm.Chart) -> None:
    def scaling(values: dict[str, Any]) -> tuple[dict[str, Doc], Doc, list[Doc]]:
        docs = render(chart, values)
        deployment = only(docs, "Deployment", "demo-tritonfleet-controlplane")
        gateway = only(docs, "Deployment", "demo-tritonfleet-gateway")
        gateway_env = env_of(gateway["spec"]["template"]["spec"]["containers"][0])
        assert not gateway_env.keys() & {"TRITONFLEET_MIN_SERVERS", "TRITONFLEET_MAX_SERVERS"}
        env = env_of(deployment["spec"]["template"]["spec"]["containers"][0])
        return env, only(docs, "StatefulSet", STATEFULSET), docs

    env, sts, _ = scaling({})
    assert "TRITONFLEET_MAX_SERVERS" not in env and "TRITONFLEET_MIN_SERVERS" not in env
    assert sts["spec"]["replicas"] == 2

    env, sts, docs = scaling(VARIATIONS["scale-fleet"])
    assert env["TRITONFLEET_MIN_SERVERS"]["value"] == "1"
    assert env["TRITONFLEET_MAX_SERVERS"]["value"] == "6"
    # The control plane is the one writer: Helm does not reset its size, nothing else scales.
    assert "replicas" not in sts["spec"]
    assert not kinds(docs) & {"ScaledObject", "HorizontalPodAutoscaler"}
    (role,) = [d for d in docs if d["kind"] == "Role" and "controlplane" in d["metadata"]["name"]]
    assert {
        "apiGroups": ["apps"],
        "resources": ["statefulsets/scale"],
        "resourceNames": [STATEFULSET],
        "verbs": ["get", "patch"],
    } in role["rules"]
    notes = render_raw(chart, VARIATIONS["scale-fleet"])["tritonfleet/templates/NOTES.txt"]
    assert "The control plane scales the fleet: 1..6 pods" in notes


def test_autopilot_values_reach_the_control_plane_as_settings(chart: helm.Chart) -> None:
    from adapters.settings import Settings

    values = {
        "controlplane": {
            "autopilot": {
                "enabled": True,
                "stableWindowS": 20,
                "panicWindowS": 4,
                "sloP95Ms": 80,
                "sloP99Ms": 150,
                "serverIdleS": 45,
                "drainTimeoutS": 12,
            }
        }
    }
    deployment = only(render(chart, values), "Deployment", "demo-tritonfleet-controlplane")
    env = env_of(deployment["spec"]["template"]["spec"]["containers"][0])
    plain = {k: v["value"] for k, v in env.items() if "value" in v}
    expect = {
        "TRITONFLEET_AUTOPILOT": "true",
        "TRITONFLEET_AUTOPILOT_STABLE_WINDOW_S": "20",
        "TRITONFLEET_AUTOPILOT_PANIC_WINDOW_S": "4",
        "TRITONFLEET_SLO_P95_MS": "80",
        "TRITONFLEET_SLO_P99_MS": "150",
        "TRITONFLEET_SERVER_IDLE_S": "45",
        "TRITONFLEET_DRAIN_TIMEOUT_S": "12",
    }
    assert expect.items() <= plain.items()
    # Every variable the chart sets is a field the control plane reads (no dead settings).
    fields = {f"TRITONFLEET_{n.upper()}" for n in Settings.model_fields}
    assert set(env) <= fields, set(env) - fields
    settings = Settings(
        **{k.removeprefix("TRITONFLEET_").lower(): v for k, v in expect.items()}  # type: ignore[arg-type]
    )
    assert (settings.slo_p95_ms, settings.autopilot_panic_window_s) == (80, 4)
    off = only(
        render(chart, {"controlplane": {"autopilot": {"enabled": False}}}),
        "Deployment",
        "demo-tritonfleet-controlplane",
    )
    off_env = env_of(off["spec"]["template"]["spec"]["containers"][0])
    assert off_env["TRITONFLEET_AUTOPILOT"]["value"] == "false"


def test_placement_strategy_reaches_the_control_plane_as_a_setting(chart: helm.Chart) -> None:
    from adapters.settings import Settings
    from controlplane.placement import PlacementSetting

    def strategy(values: dict[str, Any]) -> str:
        deployment = only(render(chart, values), "Deployment", "demo-tritonfleet-controlplane")
        env = env_of(deployment["spec"]["template"]["spec"]["containers"][0])
        value = env["TRITONFLEET_PLACEMENT_STRATEGY"]["value"]
        assert Settings(placement_strategy=value).placement_strategy is PlacementSetting(value)
        return value

    assert strategy({}) == "auto"
    for chosen in ("pack", "spread"):
        assert strategy({"controlplane": {"placement": {"strategy": chosen}}}) == chosen
    # The control plane's own scaleFleet: it knows its bounds and resolves auto itself.
    assert strategy(VARIATIONS["scale-fleet"]) == "auto"
    # KEDA/HPA resize the StatefulSet behind its back: auto becomes pack, an explicit choice
    # stands.
    for variation in ("keda", "hpa"):
        assert strategy(VARIATIONS[variation]) == "pack"
        spread = {**VARIATIONS[variation], "controlplane": {"placement": {"strategy": "spread"}}}
        assert strategy(spread) == "spread"


def test_dashboard_values_reach_the_control_plane_as_settings(chart: helm.Chart) -> None:
    from adapters.settings import Settings

    values = {
        "controlplane": {
            "ui": {
                "enabled": False,
                "streamMaxClients": 4,
                "eventsKept": 500,
                "seriesPoints": 300,
                "streamHeartbeatS": 5,
                "streamMaxS": 120,
                "streamWriteTimeoutS": 3,
            }
        }
    }
    deployment = only(render(chart, values), "Deployment", "demo-tritonfleet-controlplane")
    env = env_of(deployment["spec"]["template"]["spec"]["containers"][0])
    ui = {k: v["value"] for k, v in env.items() if k.startswith("TRITONFLEET_UI_")}
    settings = Settings(**{k.removeprefix("TRITONFLEET_").lower(): v for k, v in ui.items()})
    assert settings.ui_enabled is False
    assert (settings.ui_stream_max_clients, settings.ui_events_kept) == (4, 500)
    assert (settings.ui_series_points, settings.ui_stream_max_s) == (300, 120)
    assert (settings.ui_stream_heartbeat_s, settings.ui_stream_write_timeout_s) == (5, 3)
    default = only(render(chart), "Deployment", "demo-tritonfleet-controlplane")
    env = env_of(default["spec"]["template"]["spec"]["containers"][0])
    assert env["TRITONFLEET_UI_ENABLED"]["value"] == "true"
    assert "/ui/" in render_raw(chart)["tritonfleet/templates/NOTES.txt"]
    assert "/ui/" not in render_raw(chart, values)["tritonfleet/templates/NOTES.txt"]


@pytest.mark.parametrize("variation", ["defaults", "gateway-config", "external-prometheus"])
def test_every_env_var_of_the_gateway_is_a_setting(chart: helm.Chart, variation: str) -> None:
    from adapters.settings import Settings

    gateway = only(render(chart, VARIATIONS[variation]), "Deployment", "demo-tritonfleet-gateway")
    env = env_of(gateway["spec"]["template"]["spec"]["containers"][0])
    fields = {f"TRITONFLEET_{n.upper()}" for n in Settings.model_fields}
    assert set(env) <= fields, set(env) - fields


def test_gateway_config_values_reach_the_gateway(
    chart: helm.Chart, monkeypatch: pytest.MonkeyPatch
) -> None:
    from adapters.gateway.config import GatewayConfig
    from adapters.settings import Settings

    gateway = only(
        render(chart, VARIATIONS["gateway-config"]), "Deployment", "demo-tritonfleet-gateway"
    )
    env = env_of(gateway["spec"]["template"]["spec"]["containers"][0])
    plain = {k: v["value"] for k, v in env.items() if k.startswith("TRITONFLEET_GATEWAY_")}
    # Every GatewayConfig field but the bind address and ports (gateway.args) and Prometheus
    # (the prometheus section), derived from the model so a new field needs a value here.
    elsewhere = {"host", "http_port", "grpc_port", "prometheus_url", "prometheus_bearer_token"}
    expected = {f"TRITONFLEET_GATEWAY_{f.upper()}" for f in GatewayConfig.model_fields}
    assert set(plain) == expected - {f"TRITONFLEET_GATEWAY_{f.upper()}" for f in elsewhere}
    assert plain["TRITONFLEET_GATEWAY_MAX_BODY_BYTES"] == "1048576"  # not 1.048576e+06
    for name in list(os.environ):
        if name.startswith("TRITONFLEET_"):
            monkeypatch.delenv(name)
    for name, value in plain.items():
        monkeypatch.setenv(name, value)
    config = Settings().gateway_config()
    for key, value in GATEWAY_CONFIG.items():
        assert getattr(config, re.sub(r"([A-Z])", r"_\1", key).lower()) == value, key
    off = only(render(chart), "Deployment", "demo-tritonfleet-gateway")
    # By default only gateway auth is set (on in the chart); the rest keeps its defaults.
    assert [
        e
        for e in env_of(off["spec"]["template"]["spec"]["containers"][0])
        if e.startswith("TRITONFLEET_GATEWAY_")
    ] == ["TRITONFLEET_GATEWAY_AUTH"]


def test_external_prometheus_reaches_control_plane_and_keda_with_a_token(
    chart: helm.Chart,
) -> None:
    docs = render(chart, VARIATIONS["external-prometheus"])
    for deployment in (d for d in docs if d["kind"] == "Deployment"):
        env = env_of(deployment["spec"]["template"]["spec"]["containers"][0])
        assert env["TRITONFLEET_PROMETHEUS_URL"]["value"] == "https://prometheus.example.com"
        assert env["TRITONFLEET_PROMETHEUS_BEARER_TOKEN"]["valueFrom"]["secretKeyRef"] == {
            "name": "prom-token",
            "key": "token",
        }
        assert "prometheus.io/scrape" not in deployment["spec"]["template"]["metadata"].get(
            "annotations", {}
        )
    auth = only(docs, "TriggerAuthentication")
    assert auth["spec"]["secretTargetRef"] == [
        {"parameter": "bearerToken", "name": "prom-token", "key": "token"}
    ]
    (trigger,) = only(docs, "ScaledObject")["spec"]["triggers"]
    assert trigger["metadata"]["serverAddress"] == "https://prometheus.example.com"
    assert trigger["metadata"]["authModes"] == "bearer"
    assert trigger["authenticationRef"] == {"name": auth["metadata"]["name"]}


# ---------------------------------------------------------------- Grafana dashboard

TRITON_METRICS = {
    "nv_inference_request_success",
    "nv_inference_request_failure",
    "nv_inference_count",
    "nv_inference_exec_count",
    "nv_inference_queue_duration_us",
    "nv_inference_compute_infer_duration_us",
    "nv_inference_request_summary_us",
    "nv_gpu_utilization",
    "nv_gpu_memory_used_bytes",
    "nv_gpu_memory_total_bytes",
    "nv_cpu_utilization",
    "nv_cpu_memory_used_bytes",
}


def test_dashboard_covers_fleet_models_and_gateway(chart: helm.Chart) -> None:
    configmap = only(render(chart), "ConfigMap")
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    dashboard = json.loads(configmap["data"]["tritonfleet.json"])
    rows = [p["title"] for p in dashboard["panels"] if p["type"] == "row"]
    assert rows == ["Fleet", "Models", "Gateway"]

    section = ""
    exprs: dict[str, list[str]] = {}
    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            section = panel["title"]
            continue
        assert panel["targets"], panel["title"]
        exprs.setdefault(section, []).extend(t["expr"] for t in panel["targets"])

    # The autoscaling signal, as KEDA/HPA compute it, filtered by the namespace variable.
    unfiltered = [e.replace('{namespace=~"$namespace"}', "") for e in exprs["Fleet"]]
    assert QUEUE_TIME_QUERY in unfiltered
    from adapters.gateway.metrics import GatewayMetrics

    families = set(re.findall(r"# TYPE (\S+)", GatewayMetrics().render().decode()))
    for expr in exprs["Gateway"]:
        names = set(re.findall(r"\b(?:nv|tritonfleet)_[a-z_]+", expr))
        assert names and all(n.startswith("tritonfleet_gateway_") for n in names), expr
        for n in names:  # a family the gateway renders (histograms by their _bucket series)
            assert n.removesuffix("_bucket") in families, n
    for expr in exprs["Fleet"] + exprs["Models"]:
        names = set(re.findall(r"\bnv_[a-z_]+", expr))
        assert names and names <= TRITON_METRICS, expr
    # Panels must not overlap on the grid.
    cells = set()
    for panel in dashboard["panels"]:
        grid = panel["gridPos"]
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in cells, panel["title"]
                cells.add((x, y))


def test_notes_tell_how_to_reach_scale_and_read_the_key(chart: helm.Chart) -> None:
    notes = render_raw(chart)["tritonfleet/templates/NOTES.txt"]
    assert f"scale statefulset/{STATEFULSET}" in notes
    assert "triton-grpc-protocol-admin-key" in notes
    assert "demo-tritonfleet-admin-key" in notes


# ---------------------------------------------------------------- bad values


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({"triton": {"replicas": -1}}, "at '/triton/replicas': minimum: got -1, want 0"),
        ({"gateway": {"replicas": -3}}, "at '/gateway/replicas': minimum: got -3, want 0"),
        ({"controlplane": {"replicas": 2}}, "at '/controlplane/replicas': maximum: got 2, want 1"),
        (
            {"triton": {"gpu": {"resource": "amd.com/gpu"}}},
            "at '/triton/gpu/resource': 'amd.com/gpu' does not match pattern",
        ),
        (
            {"triton": {"gpu": {"resource": "nvidia.com/mig-big"}}},
            "at '/triton/gpu/resource': 'nvidia.com/mig-big' does not match pattern",
        ),
        ({"triton": {"gpu": {"count": -1}}}, "at '/triton/gpu/count': minimum: got -1, want 0"),
        ({"tritn": {"replicas": 1}}, "additional properties 'tritn' not allowed"),
        (
            {"gateway": {"config": {"maxBodyByte": 1}}},
            "additional properties 'maxBodyByte' not allowed",
        ),
        ({"gateway": {"config": {"headerTimeoutS": 0}}}, "at '/gateway/config/headerTimeoutS'"),
        ({"gateway": {"config": {"policy": "fastest"}}}, "at '/gateway/config/policy'"),
        (
            {"controlplane": {"scaleFleet": {"minServers": 0}}},
            "at '/controlplane/scaleFleet/minServers': minimum: got 0, want 1",
        ),
        (
            {"triton": {"restrictedApis": ["trace"]}},
            "at '/triton/restrictedApis'",
        ),
        (
            {"controlplane": {"ui": {"streamMaxClients": 0}}},
            "at '/controlplane/ui/streamMaxClients': minimum: got 0, want 1",
        ),
        (
            {"controlplane": {"ui": {"enabled": True, "theme": "dark"}}},
            "at '/controlplane/ui'",
        ),
        (
            {"controlplane": {"placement": {"strategy": "worst-fit"}}},
            "at '/controlplane/placement/strategy'",
        ),
    ],
)
def test_schema_rejects_bad_values_naming_the_field(
    chart: helm.Chart, values: dict[str, Any], expected: str
) -> None:
    with pytest.raises(helm.HelmValuesError) as caught:
        chart.validate_schema(values)
    assert expected in str(caught.value)
    # install/render run the same check
    with pytest.raises(helm.HelmValuesError, match=re.escape(expected)):
        render_raw(chart, values)


@pytest.mark.parametrize(
    "resource", ["nvidia.com/gpu", "nvidia.com/mig-1g.10gb", "nvidia.com/mig-3g.71gb"]
)
def test_schema_accepts_whole_gpus_and_mig_profiles(chart: helm.Chart, resource: str) -> None:
    chart.validate_schema({"triton": {"gpu": {"resource": resource, "count": 1}}})


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        (
            {"triton": {"extraArgs": ["--model-control-mode=poll"]}},
            'triton.extraArgs[0] is "--model-control-mode=poll": the chart sets that flag itself',
        ),
        (
            {"triton": {"extraArgs": ["--log-verbose=1", "--repository-poll-secs=5"]}},
            "triton.extraArgs[1] is",
        ),
        (
            {"triton": {"modelRepository": {"type": "objectStore"}}},
            "triton.modelRepository.objectStore.uri is required",
        ),
        ({"autoscaling": {"enabled": True}}, "autoscaling.enabled needs prometheus.url"),
        (
            {
                "prometheus": {"url": "http://p:9090"},
                "autoscaling": {"enabled": True, "minReplicas": 5, "maxReplicas": 2},
            },
            "autoscaling.minReplicas (5) is greater than autoscaling.maxReplicas (2)",
        ),
        (
            {
                **VARIATIONS["keda"],
                "controlplane": {"scaleFleet": {"enabled": True}},
            },
            "controlplane.scaleFleet.enabled and autoscaling.enabled (keda) would both scale the "
            "Triton StatefulSet and fight over its replica count; enable only one",
        ),
        (
            {**VARIATIONS["hpa"], "controlplane": {"scaleFleet": {"enabled": True}}},
            "autoscaling.enabled (hpa) would both scale",
        ),
        (
            {"controlplane": {"scaleFleet": {"enabled": True, "minServers": 4, "maxServers": 3}}},
            "controlplane.scaleFleet.minServers (4) is greater than "
            "controlplane.scaleFleet.maxServers (3)",
        ),
        (
            {
                "triton": {"replicas": 10},
                "controlplane": {"scaleFleet": {"enabled": True, "maxServers": 8}},
            },
            "triton.replicas (10) is outside controlplane.scaleFleet.minServers..maxServers (1..8)",
        ),
    ],
)
def test_inconsistent_values_fail_render_with_what_to_change(
    chart: helm.Chart, values: dict[str, Any], expected: str
) -> None:
    with pytest.raises(helm.HelmRenderError, match=re.escape(expected)):
        render_raw(chart, values)


def test_schema_is_draft_07_so_helm_3_validates_it_too() -> None:
    schema = json.loads((CHART_DIR / "values.schema.json").read_text())
    assert schema["$schema"] == "http://json-schema.org/draft-07/schema#"
    assert yaml.safe_load((CHART_DIR / "Chart.yaml").read_text())["apiVersion"] == "v2"
