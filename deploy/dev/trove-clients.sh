#!/usr/bin/env bash
# Installs OpenStack's own Trove clients, the `openstack database ...` commands
# (python-openstackclient with the python-troveclient plugin) and the legacy `trove` shell,
# into a virtualenv under target/trove-clients-venv, from PyPI, at pinned versions.
# Idempotent: a venv that already has these versions is left alone. Prints the venv's
# bin directory; put it on PATH (README.md, "Trove's own clients", shows how to point
# each client at Ferrotrove).
#
#   FTROVE_TROVE_VENV   where the venv goes (default target/trove-clients-venv)
#   PYTHON              the interpreter to build it with (default python3)
set -euo pipefail
cd "$(dirname "$0")/../.."
VENV=${FTROVE_TROVE_VENV:-$PWD/target/trove-clients-venv}
PYTHON=${PYTHON:-python3}

# The versions Ferrotrove is tested with (tests/tests/trove_clients.rs). The top two are what
# users run; the rest are their libraries, pinned so that the venv is the same every time.
PINS=(
  python-troveclient==8.11.0
  python-openstackclient==10.5.0
  osc-lib==4.7.0
  keystoneauth1==5.18.1
  openstacksdk==4.22.0
)

log() { printf '[trove-clients] %s\n' "$*" >&2; }

STAMP=$VENV/.ftrove-pins
if [ -x "$VENV/bin/openstack" ] && [ -x "$VENV/bin/trove" ] &&
   [ "$(cat "$STAMP" 2>/dev/null)" = "${PINS[*]}" ]; then
  log "already installed in $VENV"
else
  log "creating $VENV with ${PINS[*]}"
  mkdir -p "$(dirname "$VENV")"
  "$PYTHON" -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "${PINS[@]}"
  "$VENV/bin/openstack" --version >&2
  "$VENV/bin/trove" --version >&2 2>&1 || true
  printf '%s' "${PINS[*]}" > "$STAMP"
  log "installed"
fi
echo "$VENV/bin"
