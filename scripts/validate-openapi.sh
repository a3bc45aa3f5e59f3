#!/usr/bin/env bash
# Validates the OpenAPI document of a running service with the PyPI package
# openapi-spec-validator. Starts nothing: run the app first (cargo run -p app).
#
#   BASE=http://127.0.0.1:8080 scripts/validate-openapi.sh
#
# The validator is installed into a virtualenv under target/ when missing.
set -euo pipefail

BASE="${BASE:-http://127.0.0.1:8080}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${OPENAPI_VENV:-$ROOT/target/openapi-venv}"
VALIDATOR="$VENV/bin/openapi-spec-validator"

if [[ ! -x "$VALIDATOR" ]]; then
    echo "installing openapi-spec-validator into $VENV" >&2
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check openapi-spec-validator
fi

DOC="$(mktemp --suffix=.json)"
trap 'rm -f "$DOC"' EXIT
curl --fail --silent --show-error --max-time 10 "$BASE/api-docs/openapi.json" -o "$DOC"
echo "validating $BASE/api-docs/openapi.json ($(wc -c <"$DOC") bytes)" >&2
"$VALIDATOR" "$DOC"
