#!/usr/bin/env bash
# The test command: sets everything up on a fresh machine, then runs the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check --quiet .   # lint and import order, configured in pyproject.toml
exec .venv/bin/python -m pytest -q "$@"
