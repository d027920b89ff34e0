#!/usr/bin/env bash
# install-bench.sh - install the load generators `make bench` uses (bench/README.md):
# wrk (manifest GET) and hey (manifest HEAD: wrk cannot send HEAD, wg/wrk#198), both
# Debian bookworm packages. distribution's docker-registry, the baseline, comes from
# install-clients.sh (`make clients`). Idempotent: a second run only checks.
# `make bench` runs it (as root on Debian); bench/run.py never installs anything and
# falls back to its built-in load generator for whatever is missing.
#
#   sudo scripts/install-bench.sh
#
# Environment:
#   OCI_BENCH_APT_UPDATE  set to 1 to run "apt-get update" first
#
# Like install-clients.sh: every apt-get install is simulated first and the script
# aborts if it would change libc6 or remove a package.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
PACKAGES=(wrk hey)

. "$(dirname "$0")/apt.sh"

[ "$(id -u)" = 0 ] || die "run as root"
command -v apt-get >/dev/null || die "needs apt-get (Debian)"

if [ "${OCI_BENCH_APT_UPDATE:-0}" = 1 ]; then "${APT[@]}" update -q; fi
apt_install "${PACKAGES[@]}"
for p in "${PACKAGES[@]}"; do
  printf '%-6s %s\n' "$p" "$(dpkg-query -W -f='${Version}' "$p")"
done
