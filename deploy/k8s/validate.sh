#!/bin/bash
# Validates the manifests against Kubernetes' own schemas, offline, with the PyPI package
# kubernetes-validate (installed with pip into .cache/k8s-pip on first use, as fetch-model
# installs its package). Run from anywhere.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
pkgs="$root/.cache/k8s-pip"
if [ ! -d "$pkgs/kubernetes_validate" ]; then
  python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore --target "$pkgs" kubernetes-validate==1.37.0
fi
# 1.33: backoffLimitPerIndex (per-index retries of Indexed Jobs) is generally available.
PYTHONPATH="$pkgs" python3 -m kubernetes_validate --strict --kubernetes-version 1.33.0 "$root"/deploy/k8s/*.yaml
