#!/usr/bin/env bash
# Everything CI checks: lint, format, types (package and tests), then the README's test command.
# CI (.ci/run) calls this script after installing; run it before you push.
set -euo pipefail
cd "$(dirname "$0")/.."
ruff check queuectl tests scripts
ruff format --check queuectl tests scripts
mypy queuectl tests
python -m pytest "$@"
