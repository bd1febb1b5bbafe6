#!/usr/bin/env bash
# Renders every overlay (kubectl kustomize) and validates each object against Kubernetes'
# own schemas (kubernetes-validate, strict: no unknown fields), for the oldest and newest
# Kubernetes releases it knows that Kennel supports; the autoscaling add-ons too (the KEDA
# object, a custom resource in no Kubernetes schema, is only parsed). No cluster is needed,
# and none runs here: this proves the manifests well-formed, not that a cluster runs them.
#   deploy/kubernetes/validate.sh        (needs kubectl; makes a virtual environment with
#                                         kubernetes-validate in ~/.cache/kennel on first use)
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
versions=(1.29.0 1.37.0)
tools=${XDG_CACHE_HOME:-$HOME/.cache}/kennel/venv-tools
validator=kubernetes-validate==1.37.0
if [[ ! -x $tools/bin/kubernetes-validate ]]; then
  /usr/bin/python3 -m venv "$tools"
  "$tools/bin/python" -m pip install --disable-pip-version-check -q "$validator"
fi
command -v kubectl >/dev/null || { echo "kubectl is needed (Debian: kubernetes-client)" >&2; exit 1; }
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
count=0
for overlay in "$here"/overlays/*/; do
  name=$(basename "$overlay")
  kubectl kustomize "$overlay" >"$out/$name.yaml" 2> >(grep -v "is deprecated" >&2)
  for v in "${versions[@]}"; do
    "$tools/bin/kubernetes-validate" --strict --quiet -k "$v" "$out/$name.yaml"
  done
  n=$(grep -c '^kind:' "$out/$name.yaml")
  echo "overlay $name: $n objects valid for Kubernetes ${versions[*]}"
  count=$((count + n))
done
for v in "${versions[@]}"; do
  "$tools/bin/kubernetes-validate" --strict --quiet -k "$v" "$here/autoscaling/prometheus-adapter.yaml"
done
"$tools/bin/python" - "$here/autoscaling/keda-scaledobject.yaml" <<'PY'
import sys, yaml
d = yaml.safe_load(open(sys.argv[1]))
assert d["kind"] == "ScaledObject" and d["spec"]["scaleTargetRef"]["name"] == "kennel-inference", d
PY
echo "kubernetes: $count objects in $(find "$here/overlays" -mindepth 1 -maxdepth 1 -type d | wc -l) overlays valid; add-ons parsed"
