#!/usr/bin/env bash
# The same checks as CI, plus lint and types: run before you push.
set -euo pipefail
cd "$(dirname "$0")/.."
ruff check queuectl tests scripts
mypy queuectl
python -m pytest "$@"
