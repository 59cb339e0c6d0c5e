#!/usr/bin/env bash
# Installs MMDetection 3.3.0 into alb's environment (default .venv) for the optional
# MMDetection adapter (alb.models.mmdet_adapter). mmdet 3.3.0 needs mmcv>=2.0.0rc4,<2.2.0
# with its compiled ops (mmcv-lite lacks mmcv._ext), and PyPI has no mmcv wheel for
# torch 2.15, so mmcv 2.1.0 is built from its source package. Two changes make it build
# against torch 2.15 (../shared/NOTES.md): setuptools<81 (mmcv's setup.py imports
# pkg_resources) and -std=c++20 instead of -std=c++17 (torch 2.15's headers need C++20).
# About 20 minutes on 2 cores. Usage: scripts/install_mmdet.sh [python]   (default .venv/bin/python)
set -euo pipefail

PY="${1:-.venv/bin/python}"
MMCV_VERSION=2.1.0
MMDET_VERSION=3.3.0
MMENGINE_VERSION=0.10.7

if ! "$PY" -c "import torch" 2>/dev/null; then
  echo "install_mmdet.sh: $PY cannot import torch; run 'make install' first (or pass the python of alb's environment)" >&2
  exit 1
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

"$PY" -m pip install "setuptools<81" wheel ninja "mmengine==${MMENGINE_VERSION}"
"$PY" -m pip download --no-deps --no-binary :all: --no-build-isolation -d "$work" "mmcv==${MMCV_VERSION}"
tar -xzf "$work"/mmcv-${MMCV_VERSION}.tar.gz -C "$work"
src="$work/mmcv-${MMCV_VERSION}"
grep -q -- "-std=c++17" "$src/setup.py" || { echo "install_mmdet.sh: no -std=c++17 in mmcv's setup.py; the patch no longer applies" >&2; exit 1; }
sed -i 's/-std=c++17/-std=c++20/g' "$src/setup.py"
MMCV_WITH_OPS=1 MAX_JOBS="${MAX_JOBS:-2}" "$PY" -m pip install --no-build-isolation "$src"
"$PY" -m pip install "mmdet==${MMDET_VERSION}"
"$PY" -c "import mmcv.ops, mmdet; print('mmcv', mmcv.__version__, 'mmdet', mmdet.__version__, 'ops OK')"
