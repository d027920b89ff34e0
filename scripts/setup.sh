#!/usr/bin/env bash
# Create .venv with oci-ref, on a fresh Debian machine too:
#   scripts/setup.sh serve   what `oci-ref serve` needs (make run)
#   scripts/setup.sh [test]  that and the test tools: pytest, ruff, schemathesis, ...
#                            (make setup, make test)
# Installs Debian's python3-venv when venv cannot work and we are root.
#
# The interpreter: $PYTHON when set; otherwise the system's (/usr/bin/python3, or
# $SYSTEM_PYTHON) when it is >= 3.11 and can make a venv (or we can make it able:
# root and apt), else the first python3 on PATH: a distribution's build (Debian's:
# PGO and LTO) runs oci-ref with about a quarter less CPU than one built without
# --enable-optimizations, as pyenv builds by default (bench/README.md, issue 17).
# An existing .venv is kept as it is.
set -euo pipefail
cd "$(dirname "$0")/.."
SYSTEM_PYTHON=${SYSTEM_PYTHON:-/usr/bin/python3}
root_apt() { [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; }
if [ -z "${PYTHON:-}" ]; then
  PYTHON=python3
  # Debian ships ensurepip (what venv needs) in python3.X-venv.
  if [ -x "$SYSTEM_PYTHON" ] \
      && "$SYSTEM_PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null \
      && { "$SYSTEM_PYTHON" -c 'import ensurepip' 2>/dev/null || root_apt; }; then
    PYTHON=$SYSTEM_PYTHON
  fi
fi
MODE=${1:-test}
case "$MODE" in
  serve) SPEC='.' ;;
  test) SPEC='.[test]' ;;
  *) echo "usage: scripts/setup.sh [serve|test]" >&2; exit 2 ;;
esac

if ! command -v "$PYTHON" >/dev/null; then
  if root_apt; then
    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3 python3-venv
  else
    echo "setup: $PYTHON not found; install Python >= 3.11" >&2; exit 1
  fi
fi
"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || {
  echo "setup: Python >= 3.11 is required ($("$PYTHON" --version))" >&2; exit 1; }

if [ ! -x .venv/bin/python ]; then
  if ! "$PYTHON" -m venv .venv 2>/dev/null; then
    rm -rf .venv
    if root_apt; then
      ver=$("$PYTHON" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
      apt-get update -q
      DEBIAN_FRONTEND=noninteractive apt-get install -y -q "python${ver}-venv" || \
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3-venv
      "$PYTHON" -m venv .venv
    else
      echo "setup: '$PYTHON -m venv' failed; install python3-venv (apt)" >&2; exit 1
    fi
  fi
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e "$SPEC"
# The test install holds the serve install: both stamps (see the Makefile).
touch .venv/.installed-serve
if [ "$MODE" = test ]; then touch .venv/.installed-test; fi
