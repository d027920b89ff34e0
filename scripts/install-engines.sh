#!/usr/bin/env bash
# install-engines.sh - install the real engines the scale-out tests start (tests/engines.py):
# Debian's PostgreSQL server and haproxy (bookworm packages), and the unprivileged system
# user the tests run PostgreSQL as (initdb and postgres refuse to run as root). The S3
# server, moto, is a Python package of the test extras (scripts/setup.sh).
# Idempotent: a second run only checks. `make test` runs it (as root on Debian) through
# `make engines`; the tests never install anything.
#
#   sudo scripts/install-engines.sh
#
# Environment:
#   OCI_ENGINES_APT_UPDATE  set to 1 to run "apt-get update" first
#   OCI_REF_TEST_USER       the system user PostgreSQL runs as (default oci-ref-test)
#
# Like install-clients.sh: every apt-get install is simulated first and the script
# aborts if it would change libc6 or remove a package. No daemon is started: the
# tests start their own PostgreSQL and haproxy on free loopback ports.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
PACKAGES=(postgresql haproxy)
TEST_USER=${OCI_REF_TEST_USER:-oci-ref-test}

. "$(dirname "$0")/apt.sh"

[ "$(id -u)" = 0 ] || die "run as root"
command -v apt-get >/dev/null || die "needs apt-get (Debian)"

if [ -n "$(apt_missing "${PACKAGES[@]}")" ]; then
  if [ "${OCI_ENGINES_APT_UPDATE:-0}" = 1 ]; then "${APT[@]}" update -q; fi
  # The tests make their own clusters: keep postgresql-common from creating (and
  # starting) the system-wide "main" cluster on port 5432.
  if [ ! -e /etc/postgresql-common/createcluster.d/oci-ref.conf ]; then
    mkdir -p /etc/postgresql-common/createcluster.d
    printf 'create_main_cluster = false\n' > /etc/postgresql-common/createcluster.d/oci-ref.conf
  fi
fi
apt_install "${PACKAGES[@]}"

if ! getent passwd "$TEST_USER" >/dev/null; then
  log "adding system user $TEST_USER (PostgreSQL for the tests runs as it)"
  useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin \
    "$TEST_USER"
fi

pg=$(ls -d /usr/lib/postgresql/*/bin/postgres 2>/dev/null | sort -V | tail -n 1)
[ -n "$pg" ] || die "no postgres binary under /usr/lib/postgresql/*/bin"
printf '%-10s %s\n' postgresql "$("$pg" --version)" haproxy "$(haproxy -v | head -n 1)"
