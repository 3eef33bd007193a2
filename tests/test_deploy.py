"""The KubeRay manifests (deploy/kuberay) are valid and fit the farm.

Kubernetes objects, and every pod template inside the KubeRay resources, are validated with
kubernetes-validate (PyPI; Kubernetes' own OpenAPI schemas, strict: unknown fields fail).
No registry reachable here ships KubeRay's CRD schemas, so the KubeRay fields are checked
against RAY_SCHEMA below: the ray.io/v1 fields the manifests use, with their types and
enums, from KubeRay's API reference (docs/reference/api.md, v1.5); any other field fails.
Where KubeRay's CRD files are at hand (`CAMEOFARM_KUBERAY_CRDS=<kuberay>/ray-operator/config/
crd/bases`), the manifests are also checked against their openAPIV3Schema.
Then the cross-checks a typo would break: every Secret, ConfigMap and claim a pod refers to
exists with that key; the farm's config in the ConfigMap loads; the GPU worker groups at
their maximum hold every pool at its max_replicas; the RayJob selects the cluster."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

DEPLOY = Path(__file__).resolve().parent.parent / "deploy" / "kuberay"
KUBERNETES = "1.33"

_STR_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
_OBJECT = {"type": "object"}  # a Kubernetes type, validated by kubernetes-validate


def _closed(properties: dict[str, Any], required: tuple[str, ...] = ()) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": properties,
        "required": list(required),
        "additionalProperties": False,
    }


_WORKER_GROUP = _closed(
    {
        "groupName": {"type": "string"},
        "replicas": {"type": "integer", "minimum": 0},
        "minReplicas": {"type": "integer", "minimum": 0},
        "maxReplicas": {"type": "integer", "minimum": 0},
        "idleTimeoutSeconds": {"type": "integer"},
        "rayStartParams": _STR_MAP,
        "resources": _STR_MAP,
        "labels": _STR_MAP,
        "template": _OBJECT,
        "numOfHosts": {"type": "integer", "minimum": 1},
    },
    ("groupName", "template"),
)
_CLUSTER_SPEC = _closed(
    {
        "rayVersion": {"type": "string"},
        "enableInTreeAutoscaling": {"type": "boolean"},
        "authOptions": _closed(
            {
                "mode": {"enum": ["disabled", "token"]},
                "secretName": {"type": "string"},
                "enableK8sTokenAuth": {"type": "boolean"},
            }
        ),
        "autoscalerOptions": _closed(
            {
                "version": {"enum": ["v1", "v2"]},
                "upscalingMode": {"enum": ["Conservative", "Default", "Aggressive"]},
                "idleTimeoutSeconds": {"type": "integer"},
                "resources": _OBJECT,
                "image": {"type": "string"},
                "imagePullPolicy": {"type": "string"},
                "env": {"type": "array"},
                "envFrom": {"type": "array"},
            }
        ),
        "headGroupSpec": _closed(
            {
                "rayStartParams": _STR_MAP,
                "template": _OBJECT,
                "serviceType": {"type": "string"},
                "resources": _STR_MAP,
                "labels": _STR_MAP,
                "enableIngress": {"type": "boolean"},
            },
            ("template",),
        ),
        "workerGroupSpecs": {"type": "array", "items": _WORKER_GROUP},
        "headServiceAnnotations": _STR_MAP,
        "suspend": {"type": "boolean"},
    },
    ("headGroupSpec",),
)
_JOB_SPEC = _closed(
    {
        "entrypoint": {"type": "string"},
        "clusterSelector": _STR_MAP,
        "submissionMode": {"enum": ["K8sJobMode", "HTTPMode", "InteractiveMode", "SidecarMode"]},
        "activeDeadlineSeconds": {"type": "integer", "minimum": 0},
        "backoffLimit": {"type": "integer", "minimum": 0},
        "shutdownAfterJobFinishes": {"type": "boolean"},
        "ttlSecondsAfterFinished": {"type": "integer", "minimum": 0},
        "runtimeEnvYAML": {"type": "string"},
        "submitterPodTemplate": _OBJECT,
        "rayClusterSpec": _CLUSTER_SPEC,
    },
    ("entrypoint",),
)
_META = {"type": "object", "required": ["name"]}
RAY_SCHEMA = {
    "RayCluster": _closed(
        {
            "apiVersion": {"const": "ray.io/v1"},
            "kind": {},
            "metadata": _META,
            "spec": _CLUSTER_SPEC,
        },
        ("apiVersion", "kind", "metadata", "spec"),
    ),
    "RayJob": _closed(
        {"apiVersion": {"const": "ray.io/v1"}, "kind": {}, "metadata": _META, "spec": _JOB_SPEC},
        ("apiVersion", "kind", "metadata", "spec"),
    ),
}


def _documents() -> list[dict[str, Any]]:
    docs = []
    for path in sorted(DEPLOY.glob("*.yaml")):
        docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


def _by_kind(kind: str) -> list[dict[str, Any]]:
    return [d for d in _documents() if d["kind"] == kind]


def _templates(doc: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """The pod templates inside a KubeRay resource, with where they are."""
    spec = doc["spec"]
    cluster = spec.get("rayClusterSpec", spec) if doc["kind"] == "RayJob" else spec
    found = []
    if "headGroupSpec" in cluster:
        found.append(("headGroupSpec", cluster["headGroupSpec"]["template"]))
    for group in cluster.get("workerGroupSpecs", []):
        found.append((f"workerGroupSpecs[{group['groupName']}]", group["template"]))
    if "submitterPodTemplate" in spec:
        found.append(("submitterPodTemplate", spec["submitterPodTemplate"]))
    return found


def test_every_kubernetes_object_and_pod_template_is_valid_kubernetes():
    import kubernetes_validate as kv

    docs = _documents()
    assert {d["kind"] for d in docs} >= {
        "RayCluster",
        "RayJob",
        "ConfigMap",
        "Secret",
        "PersistentVolumeClaim",
    }
    for doc in docs:
        if doc["apiVersion"].startswith("ray.io/"):
            for where, template in _templates(doc):
                pod = {
                    "apiVersion": "v1",
                    "kind": "PodTemplate",
                    "metadata": {"name": f"{doc['metadata']['name']}-{where}"},
                    "template": template,
                }
                kv.validate(pod, KUBERNETES, strict=True)
        else:
            kv.validate(doc, KUBERNETES, strict=True)


def test_the_validator_refuses_what_kubernetes_would():
    """The checks can fail: a misspelt field in a pod template, a wrong type, a KubeRay
    field that does not exist."""
    import kubernetes_validate as kv

    [cluster] = _by_kind("RayCluster")
    template = cluster["spec"]["headGroupSpec"]["template"]
    bad = {**template, "spec": {**template["spec"], "nodeSelektor": {"a": "b"}}}
    with pytest.raises(kv.ValidationError):
        kv.validate(
            {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": "x"}, "template": bad},
            KUBERNETES,
            strict=True,
        )
    group = {**cluster["spec"]["workerGroupSpecs"][0], "maxReplicas": "24"}
    spec = {**cluster["spec"], "workerGroupSpecs": [group]}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**cluster, "spec": spec}, RAY_SCHEMA["RayCluster"])
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(
            {**cluster, "spec": {**cluster["spec"], "enableAutoscaling": True}},
            RAY_SCHEMA["RayCluster"],
        )


def test_kuberay_resources_use_only_kuberay_fields():
    for kind, schema in RAY_SCHEMA.items():
        docs = _by_kind(kind)
        assert docs, kind
        for doc in docs:
            jsonschema.validate(doc, schema)


@pytest.mark.skipif(
    not os.environ.get("CAMEOFARM_KUBERAY_CRDS"),
    reason="KubeRay's CRD files are not in any registry: set CAMEOFARM_KUBERAY_CRDS to check",
)
def test_kuberay_resources_match_kuberays_own_crds():
    crds = Path(os.environ["CAMEOFARM_KUBERAY_CRDS"])
    for kind, file in (("RayCluster", "rayclusters"), ("RayJob", "rayjobs")):
        crd = yaml.safe_load((crds / f"ray.io_{file}.yaml").read_text())
        [version] = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
        schema = version["schema"]["openAPIV3Schema"]
        for doc in _by_kind(kind):
            jsonschema.validate(doc, schema)
            assert _unknown(doc, schema) == [], kind


def _unknown(value: Any, schema: dict[str, Any], path: str = "") -> list[str]:
    """Fields a structural schema does not declare (the API server would drop them)."""
    if isinstance(value, dict) and "properties" in schema:
        if schema.get("x-kubernetes-preserve-unknown-fields"):
            return []
        out = []
        for key, item in value.items():
            sub = schema["properties"].get(key)
            if sub is None:
                out.append(f"{path}.{key}")
            else:
                out += _unknown(item, sub, f"{path}.{key}")
        return out
    if isinstance(value, list) and "items" in schema:
        return [u for i, item in enumerate(value) for u in _unknown(item, schema["items"], path)]
    return []


def test_every_secret_config_map_and_claim_a_pod_uses_exists_with_its_key():
    docs = _documents()
    secrets = {
        d["metadata"]["name"]: set(d.get("stringData", {})) | set(d.get("data", {}))
        for d in docs
        if d["kind"] == "Secret"
    }
    maps = {d["metadata"]["name"]: set(d["data"]) for d in docs if d["kind"] == "ConfigMap"}
    claims = {d["metadata"]["name"] for d in docs if d["kind"] == "PersistentVolumeClaim"}
    used = 0
    for doc in _by_kind("RayCluster") + _by_kind("RayJob"):
        for where, template in _templates(doc):
            for container in template["spec"]["containers"]:
                for env in container.get("env", []):
                    ref = env.get("valueFrom", {}).get("secretKeyRef")
                    if ref:
                        used += 1
                        assert ref["key"] in secrets.get(ref["name"], set()), (where, ref)
            for volume in template["spec"].get("volumes", []):
                if "configMap" in volume:
                    assert volume["configMap"]["name"] in maps, (where, volume)
                if "persistentVolumeClaim" in volume:
                    assert volume["persistentVolumeClaim"]["claimName"] in claims
        auth = doc["spec"].get("authOptions", {})
        if auth.get("mode") == "token":
            assert "auth_token" in secrets[auth["secretName"]]  # KubeRay reads this key
    assert used >= 4


def _farm_config(tmp_path: Path) -> Any:
    """The farm's config as the head pod loads it: the ConfigMap's files in a folder, and the
    head container's environment (the Secrets' example values, a pod address)."""
    from cameofarm.configs import load_config

    [config_map] = _by_kind("ConfigMap")
    for name, text in config_map["data"].items():
        (tmp_path / name).write_text(text)
    secrets = {d["metadata"]["name"]: d["stringData"] for d in _by_kind("Secret")}
    [cluster] = _by_kind("RayCluster")
    [head] = cluster["spec"]["headGroupSpec"]["template"]["spec"]["containers"]
    environ = {}
    for env in head["env"]:
        if "value" in env:
            environ[env["name"]] = env["value"].replace("$(MY_POD_IP)", "10.1.2.3")
        elif "secretKeyRef" in env["valueFrom"]:
            ref = env["valueFrom"]["secretKeyRef"]
            environ[env["name"]] = secrets[ref["name"]][ref["key"]]
    environ["CAMEOFARM_CONFIG_DIR"] = str(tmp_path)  # where the ConfigMap is mounted
    return load_config(environ=environ)


def _gpus(template: dict[str, Any]) -> float:
    limits = [c.get("resources", {}).get("limits", {}) for c in template["spec"]["containers"]]
    return sum(float(lim.get("nvidia.com/gpu", 0)) for lim in limits)


def test_the_cluster_fits_the_farms_config(tmp_path):
    config = _farm_config(tmp_path)
    assert config.cluster.address == "10.1.2.3:6379"
    assert config.storage.kind == "minio" and config.database.url.startswith("postgresql")
    assert config.api.host == "0.0.0.0" and config.monitoring.host == "0.0.0.0"

    [cluster] = _by_kind("RayCluster")
    spec = cluster["spec"]
    head = spec["headGroupSpec"]
    assert head["rayStartParams"]["num-gpus"] == "0"  # no stage replica on the head
    assert _gpus(head["template"]) == 0
    [container] = head["template"]["spec"]["containers"]
    ports = {p["containerPort"] for p in container["ports"]}
    assert {6379, config.api.port, config.monitoring.scheduler_port} <= ports
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert config.data_dir in mounts  # the signing chain outlives the head pod
    env = {e["name"]: e for e in container["env"]}
    assert env["CAMEOFARM_CONFIG_DIR"]["value"] in mounts

    # The worker groups at their maximum hold every pool at its max_replicas, so the
    # farm's autoscaler can always be given what it asks for.
    groups = spec["workerGroupSpecs"]
    assert spec["enableInTreeAutoscaling"] is True
    most = sum(g["maxReplicas"] * _gpus(g["template"]) for g in groups)
    wanted = sum(p.highest * p.num_gpus for p in config.pools.values())
    assert most >= wanted, (most, wanted)
    for group in groups:
        assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
        pod = group["template"]["spec"]
        [worker] = pod["containers"]
        gpu = worker["resources"]["limits"]["nvidia.com/gpu"]
        assert worker["resources"]["requests"]["nvidia.com/gpu"] == gpu and float(gpu) >= 1
        assert any(t["key"] == "nvidia.com/gpu" for t in pod["tolerations"])
        assert pod["nodeSelector"]
        names = {e["name"] for e in worker["env"]}
        assert {config.storage.access_key_env, config.storage.secret_key_env} <= names


def test_the_rayjob_runs_up_on_the_cluster():
    from cameofarm.service.cli import cli

    [cluster] = _by_kind("RayCluster")
    [job] = _by_kind("RayJob")
    assert job["spec"]["clusterSelector"] == {"ray.io/cluster": cluster["metadata"]["name"]}
    program, command = job["spec"]["entrypoint"].split()
    assert program == "cameofarm" and command in cli.commands  # type: ignore[attr-defined]
