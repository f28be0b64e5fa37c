#!/usr/bin/env bash
# Placeholder until the sim issue lands: LIBERO is installed here with --no-deps.
set -euo pipefail
echo "install_sim: LIBERO install not implemented yet"
