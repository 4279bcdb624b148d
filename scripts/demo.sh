#!/usr/bin/env bash
# The demo command: sets everything up, then runs the demo workflows through a real ComfyUI
# server and writes the images to out/demo/.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python scripts/demo.py "$@"
