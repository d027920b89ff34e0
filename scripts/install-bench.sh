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

log() { printf '==> %s\n' "$*" >&2; }
die() { printf 'ERROR: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "run as root"
command -v apt-get >/dev/null || die "needs apt-get (Debian)"

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then log "bench tools already installed: ${PACKAGES[*]}"; exit 0; fi

if [ "${OCI_BENCH_APT_UPDATE:-0}" = 1 ]; then apt-get update -q; fi
# Wait for a concurrent apt run (a background `make clients`) rather than fail on
# its lock.
APT=(apt-get -o DPkg::Lock::Timeout=600)
if ! sim=$("${APT[@]}" install -s -y "${missing[@]}" 2>&1); then
  log "apt: ${missing[*]} not found; updating the package lists"
  apt-get update -q
  sim=$("${APT[@]}" install -s -y "${missing[@]}")
fi
if printf '%s\n' "$sim" | grep -Eq '^(Inst|Remv) (libc6|libc-bin) '; then
  die "installing ${missing[*]} would change libc6; refusing"
fi
if printf '%s\n' "$sim" | grep -q '^Remv '; then
  printf '%s\n' "$sim" | grep '^Remv ' >&2
  die "installing ${missing[*]} would remove packages; refusing"
fi
log "apt: installing ${missing[*]}"
"${APT[@]}" install -y -q "${missing[@]}"
for p in "${PACKAGES[@]}"; do
  printf '%-6s %s\n' "$p" "$(dpkg-query -W -f='${Version}' "$p")"
done
