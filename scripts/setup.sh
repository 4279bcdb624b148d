#!/usr/bin/env bash
# One-time set-up, safe to re-run: a virtual environment in .venv with torch and the pack's
# dependencies, and a real ComfyUI 0.3.75 in .comfyui (unless COMFYUI_PATH names one).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
stamp=.venv/.hspace-deps
if [ ! -f "$stamp" ] || [ requirements.txt -nt "$stamp" ] || [ scripts/setup.sh -nt "$stamp" ]; then
  echo "setup: installing torch and the pack's dependencies into .venv (log: .venv/pip.log)"
  if ! { .venv/bin/pip install --disable-pip-version-check torch==2.14.1 torchvision==0.29.1 &&
         .venv/bin/pip install --disable-pip-version-check -r requirements.txt; } > .venv/pip.log 2>&1; then
    tail -40 .venv/pip.log
    exit 1
  fi
  touch "$stamp"
fi
.venv/bin/python scripts/provision_comfyui.py
