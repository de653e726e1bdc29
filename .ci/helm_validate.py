"""Validates manifests rendered by `helm template` (called by .ci/helm-check.sh).

usage: helm_validate.py KUBE_VERSIONS RENDERED.yaml [RENDERED.yaml ...]

KUBE_VERSIONS is a comma-separated list such as `1.25.0,1.37.0`. For every
document in every file:

- Kubernetes kinds are validated with kubernetes-validate's strict schemas
  (unknown fields are errors) against each version.
- Kinds that have no schema there are CRDs. kubernetes-validate itself only
  warns about them and passes; here only the CRDs the chart is known to emit
  are accepted (an unexpected SchemaNotFound, e.g. a typo in an apiVersion,
  fails). ServiceMonitor (monitoring.coreos.com/v1) is checked against a
  small schema below, written from the Prometheus Operator CRD, for the
  fields the chart renders.
- YAML with duplicate keys fails (Kubernetes would keep only one of them).

Then the chart's own contract is checked: the issuer pods' security context,
probes, environment and volumes (the master key a file in a read-only Secret
volume of its own; the keys directory, when mounted, a read-only Secret
mount), the migration hook Job, and that every
selector (Service, PodDisruptionBudget, ServiceMonitor, NetworkPolicy) selects
the issuer pods. Exits non-zero on any failure.
"""

from __future__ import annotations

import sys

import jsonschema
import yaml

import kubernetes_validate
from kubernetes_validate import SchemaNotFoundError, ValidationError

DURATION = r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"
RELABEL = {
    "type": "array",
    "items": {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "sourceLabels": {"type": "array", "items": {"type": "string"}},
            "separator": {"type": "string"},
            "targetLabel": {"type": "string"},
            "regex": {"type": "string"},
            "modulus": {"type": "integer"},
            "replacement": {"type": "string"},
            "action": {
                "enum": [
                    "replace", "Replace", "keep", "Keep", "drop", "Drop",
                    "hashmod", "HashMod", "labelmap", "LabelMap",
                    "labeldrop", "LabelDrop", "labelkeep", "LabelKeep",
                    "lowercase", "Lowercase", "uppercase", "Uppercase",
                    "keepequal", "KeepEqual", "dropequal", "DropEqual",
                ]
            },
        },
    },
}
LABEL_SELECTOR = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "matchLabels": {"type": "object", "additionalProperties": {"type": "string"}},
        "matchExpressions": {"type": "array", "items": {"type": "object"}},
    },
}
SERVICE_MONITOR = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "additionalProperties": False,
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "ServiceMonitor"},
        "metadata": {
            "type": "object",
            "required": ["name"],
            "properties": {
                "name": {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", "maxLength": 253},
                "namespace": {"type": "string"},
                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
            },
        },
        "spec": {
            "type": "object",
            "required": ["selector", "endpoints"],
            "additionalProperties": False,
            "properties": {
                "selector": LABEL_SELECTOR,
                "namespaceSelector": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "any": {"type": "boolean"},
                        "matchNames": {"type": "array", "items": {"type": "string"}},
                    },
                },
                "endpoints": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "properties": {
                            "port": {"type": "string"},
                            "path": {"type": "string"},
                            "scheme": {"enum": ["http", "https", "HTTP", "HTTPS"]},
                            "interval": {"type": "string", "pattern": DURATION},
                            "scrapeTimeout": {"type": "string", "pattern": DURATION},
                            "relabelings": RELABEL,
                            "metricRelabelings": RELABEL,
                        },
                    },
                },
            },
        },
    },
}
CRD_SCHEMAS = {("monitoring.coreos.com/v1", "ServiceMonitor"): SERVICE_MONITOR}


class UniqueKeyLoader(yaml.SafeLoader):
    pass


def _construct_mapping(loader, node, deep=False):
    seen = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        seen.add(key)
    return loader.construct_mapping(node, deep)


UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)

errors: list[str] = []


def fail(where: str, message: str) -> None:
    errors.append(f"{where}: {message}")
    print(f"FAIL {where}: {message}")


def name_of(doc: dict) -> str:
    return f"{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"


def validate_schema(path: str, doc: dict, versions: list[str]) -> None:
    where = f"{path} {name_of(doc)}"
    passed = []
    for version in versions:
        try:
            passed.append(kubernetes_validate.validate(doc, version, strict=True))
        except ValidationError as e:
            fail(where, f"Kubernetes {e.version} schema: {'.'.join(map(str, e.path))}: {e.message}")
        except SchemaNotFoundError:
            schema = CRD_SCHEMAS.get((doc.get("apiVersion"), doc.get("kind")))
            if schema is None:
                fail(where, f"no schema for {doc.get('apiVersion')} {doc.get('kind')} in Kubernetes {version} "
                            "and not a known CRD")
                return
            try:
                jsonschema.Draft202012Validator(schema).validate(doc)
                print(f"ok   {where}: CRD {doc['apiVersion']}, checked against the {doc['kind']} schema "
                      "in .ci/helm_validate.py")
            except jsonschema.ValidationError as e:
                fail(where, f"{doc['kind']} schema: {'.'.join(map(str, e.path))}: {e.message}")
            return  # the CRD schema does not depend on the Kubernetes version
    if len(passed) == len(versions):
        print(f"ok   {where}: strict Kubernetes schemas {', '.join(passed)}")


def env_of(container: dict) -> dict:
    return {e["name"]: e for e in container.get("env", [])}


def selects(selector: dict, labels: dict) -> bool:
    match = (selector or {}).get("matchLabels", {})
    return bool(match) and all(labels.get(k) == v for k, v in match.items())


def check_pod_security(where: str, pod: dict, container: dict) -> None:
    psc = pod.get("securityContext", {})
    csc = container.get("securityContext", {})
    if not (psc.get("runAsNonRoot") or csc.get("runAsNonRoot")):
        fail(where, "runAsNonRoot is not set")
    if not csc.get("readOnlyRootFilesystem"):
        fail(where, "readOnlyRootFilesystem is not set")
    if csc.get("allowPrivilegeEscalation") is not False:
        fail(where, "allowPrivilegeEscalation is not false")
    if "ALL" not in csc.get("capabilities", {}).get("drop", []):
        fail(where, "capabilities do not drop ALL")
    seccomp = csc.get("seccompProfile") or psc.get("seccompProfile") or {}
    if seccomp.get("type") != "RuntimeDefault":
        fail(where, "seccompProfile is not RuntimeDefault")
    mounts = {m["mountPath"]: m for m in container.get("volumeMounts", [])}
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    tmp = mounts.get("/tmp")
    if not tmp or "emptyDir" not in volumes.get(tmp["name"], {}):
        fail(where, "no emptyDir at /tmp")


def enclosing_mount(path: str, mounts: list[dict]) -> dict | None:
    """The volume mount that holds `path`: the deepest one at `path` or at one of its parents."""
    found = None
    for m in mounts:
        at = m["mountPath"].rstrip("/") or "/"
        if path == at or path.startswith(at.rstrip("/") + "/"):
            if found is None or len(at) > len(found["mountPath"].rstrip("/")):
                found = m
    return found


def check_key_files(where: str, pod: dict, container: dict, env: dict) -> None:
    """The master key is a file in a read-only Secret volume of its own, always
    there (not optional); the keys directory, read only to import keys on a
    first start, is a read-only Secret mount when anything is mounted there."""
    mounts = container.get("volumeMounts", [])
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    master_volume = None
    master = env.get("CHARTER_MASTER_KEY_FILE", {}).get("value")
    if not master or not master.startswith("/"):
        fail(where, f"CHARTER_MASTER_KEY_FILE is {master!r}, not an absolute path given as a value")
    else:
        mount = enclosing_mount(master, mounts)
        secret = volumes.get(mount["name"], {}).get("secret") if mount else None
        if not mount or not mount.get("readOnly") or secret is None:
            fail(where, f"CHARTER_MASTER_KEY_FILE {master!r} is not in a read-only Secret mount")
        else:
            master_volume = mount["name"]
            at = mount["mountPath"].rstrip("/")
            # The file of the Secret volume the path names.
            if mount.get("subPath"):
                file = mount["subPath"] if master == at else None
            else:
                file = master[len(at) + 1:] if master != at else None
            if not file:
                fail(where, f"CHARTER_MASTER_KEY_FILE {master!r} is the mount itself, not a file in it")
            elif secret.get("items") is not None and file not in {i["path"] for i in secret["items"]}:
                fail(where, f"CHARTER_MASTER_KEY_FILE {master!r}: {file!r} is not among the Secret volume's items")
            if secret.get("optional"):
                fail(where, "the master key's Secret volume is optional: pods would start without it")
    keys_dir = env.get("CHARTER_KEYS_DIR", {}).get("value")
    if keys_dir:
        mount = enclosing_mount(keys_dir, mounts)
        if mount is not None:
            at = mount["mountPath"].rstrip("/") or "/"
            if at != keys_dir.rstrip("/"):
                fail(where, f"CHARTER_KEYS_DIR {keys_dir!r} lies inside the mount at {at!r}, not a Secret of its own")
            elif not mount.get("readOnly") or "secret" not in volumes.get(mount["name"], {}):
                fail(where, f"CHARTER_KEYS_DIR {keys_dir!r} is not a read-only Secret mount")
            if master_volume is not None and mount["name"] == master_volume:
                fail(where, "CHARTER_KEYS_DIR and CHARTER_MASTER_KEY_FILE share a volume")
    for m in mounts:
        if m["name"] == "keys" and m["mountPath"].rstrip("/") != (keys_dir or "").rstrip("/"):
            fail(where, f"the keys volume is mounted at {m['mountPath']!r}, not at CHARTER_KEYS_DIR {keys_dir!r}")


def check_contract(path: str, docs: list[dict]) -> None:
    by_kind: dict[str, list[dict]] = {}
    for doc in docs:
        by_kind.setdefault(doc["kind"], []).append(doc)
    deployments = by_kind.get("Deployment", [])
    if len(deployments) != 1:
        fail(path, f"expected one Deployment, found {len(deployments)}")
        return
    deploy = deployments[0]
    where = f"{path} {name_of(deploy)}"
    pod = deploy["spec"]["template"]["spec"]
    pod_labels = deploy["spec"]["template"]["metadata"]["labels"]
    containers = pod["containers"]
    container = containers[0]
    env = env_of(container)
    check_pod_security(where, pod, container)
    if "HorizontalPodAutoscaler" not in by_kind and deploy["spec"].get("replicas", 1) < 2:
        fail(where, "fewer than 2 replicas")
    if container.get("args", [None])[0] != "serve":
        fail(where, f"args do not start with serve: {container.get('args')}")
    ports = {p["name"]: p["containerPort"] for p in container.get("ports", [])}
    if "http" not in ports:
        fail(where, "no port named http")
    listen = env.get("CHARTER_LISTEN", {}).get("value", "")
    if listen != f"0.0.0.0:{ports.get('http')}":
        fail(where, f"CHARTER_LISTEN is {listen!r}, not 0.0.0.0:<http port>")
    for probe in ("livenessProbe", "readinessProbe"):
        if container.get(probe, {}).get("httpGet", {}).get("path") != "/api/health":
            fail(where, f"{probe} is not on /api/health")
    for name in ("CHARTER_DATABASE_URL", "CHARTER_ADMIN_PASSWORD"):
        if "secretKeyRef" not in env.get(name, {}).get("valueFrom", {}):
            fail(where, f"{name} does not come from a Secret")
    check_key_files(where, pod, container, env)
    if "CHARTER_LOG_FORMAT" not in env:
        fail(where, "CHARTER_LOG_FORMAT is not set")

    jobs = [j for j in by_kind.get("Job", []) if j["spec"]["template"]["spec"]["containers"][0].get("args") == ["migrate"]]
    if jobs:
        job = jobs[0]
        jwhere = f"{path} {name_of(job)}"
        hooks = set(job["metadata"].get("annotations", {}).get("helm.sh/hook", "").split(","))
        if not {"pre-install", "pre-upgrade"} <= hooks:
            fail(jwhere, f"migration Job is not a pre-install,pre-upgrade hook: {hooks}")
        jpod = job["spec"]["template"]["spec"]
        check_pod_security(jwhere, jpod, jpod["containers"][0])
        if "CHARTER_DATABASE_URL" not in env_of(jpod["containers"][0]):
            fail(jwhere, "migration Job has no CHARTER_DATABASE_URL")
        if env.get("CHARTER_NO_MIGRATE", {}).get("value") != "true":
            fail(where, "a migration Job runs but the replicas do not set CHARTER_NO_MIGRATE=true")
        for secret in by_kind.get("Secret", []):
            ref = env_of(jpod["containers"][0])["CHARTER_DATABASE_URL"]["valueFrom"]["secretKeyRef"]["name"]
            if secret["metadata"]["name"] == ref:
                # Rendered by the chart: it must exist before the pre-install Job.
                weight = int(secret["metadata"].get("annotations", {}).get("helm.sh/hook-weight", "0"))
                job_weight = int(job["metadata"]["annotations"].get("helm.sh/hook-weight", "0"))
                shooks = set(secret["metadata"].get("annotations", {}).get("helm.sh/hook", "").split(","))
                if not {"pre-install", "pre-upgrade"} <= shooks or weight >= job_weight:
                    fail(jwhere, f"Secret {ref} is not a hook created before the Job")
    elif "CHARTER_NO_MIGRATE" in env:
        fail(where, "CHARTER_NO_MIGRATE is set but no migration Job is rendered")

    for kind, get in (
        ("Service", lambda d: {"matchLabels": d["spec"]["selector"]}),
        ("PodDisruptionBudget", lambda d: d["spec"]["selector"]),
        ("ServiceMonitor", lambda d: d["spec"]["selector"]),
        ("NetworkPolicy", lambda d: d["spec"]["podSelector"]),
    ):
        for doc in by_kind.get(kind, []):
            if not selects(get(doc), pod_labels):
                fail(f"{path} {name_of(doc)}", "its selector does not select the issuer pods")
    services = by_kind.get("Service", [])
    for monitor in by_kind.get("ServiceMonitor", []):
        ports = {p.get("name") for s in services for p in s["spec"]["ports"]}
        for endpoint in monitor["spec"]["endpoints"]:
            if endpoint.get("port") not in ports:
                fail(f"{path} {name_of(monitor)}", f"endpoint port {endpoint.get('port')!r} is not a Service port")
    for ingress in by_kind.get("Ingress", []):
        names = {s["metadata"]["name"] for s in services}
        for rule in ingress["spec"]["rules"]:
            for p in rule["http"]["paths"]:
                if p["backend"]["service"]["name"] not in names:
                    fail(f"{path} {name_of(ingress)}", "backend is not the chart's Service")
    for hpa in by_kind.get("HorizontalPodAutoscaler", []):
        if hpa["spec"]["scaleTargetRef"]["name"] != deploy["metadata"]["name"]:
            fail(f"{path} {name_of(hpa)}", "does not scale the Deployment")
    print(f"ok   {path}: chart contract ({', '.join(sorted(f'{k} x{len(v)}' for k, v in by_kind.items()))})")


def main() -> int:
    versions = sys.argv[1].split(",")
    for full_path in sys.argv[2:]:
        path = full_path.rsplit("/", 1)[-1]
        try:
            with open(full_path) as f:
                docs = [d for d in yaml.load_all(f, Loader=UniqueKeyLoader) if d]
        except yaml.YAMLError as e:
            fail(path, f"YAML: {e}")
            continue
        if not docs:
            fail(path, "no manifests rendered")
            continue
        for doc in docs:
            validate_schema(path, doc, versions)
        check_contract(path, docs)
    if errors:
        print(f"{len(errors)} manifest check(s) failed")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
