#!/bin/bash
# Validates the manifests against Kubernetes' own schemas, offline, with the PyPI package
# kubernetes-validate (installed into .cache/k8s-venv on first use). Run from anywhere.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
venv="$root/.cache/k8s-venv"
if [ ! -x "$venv/bin/kubernetes-validate" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check kubernetes-validate==1.37.0
fi
# 1.33: backoffLimitPerIndex (per-index retries of Indexed Jobs) is generally available.
"$venv/bin/kubernetes-validate" --strict --kubernetes-version 1.33.0 "$root"/deploy/k8s/*.yaml
