# apt.sh - what the install scripts share (sourced, not run): log, die, and
# apt_install, which installs Debian packages the careful way:
# - only the packages not installed yet (a second run only checks);
# - simulated first: it refuses to change libc6 or to remove any package;
# - with no daemon started by a package's postinst (a temporary deny-all
#   policy-rc.d when the machine has none): docker-registry would listen on :5000,
#   haproxy on its default config, postgresql-common would start a cluster;
# - waiting for a concurrent apt run's lock instead of failing on it;
# - updating the package lists once when a package is not found.

log() { printf '==> %s\n' "$*" >&2; }
die() { printf 'ERROR: %s\n' "$*" >&2; exit 1; }

APT=(apt-get -o DPkg::Lock::Timeout=600)
POLICY=/usr/sbin/policy-rc.d
TEMP_POLICY=0
_apt_cleanup_policy() { if [ "$TEMP_POLICY" = 1 ]; then rm -f "$POLICY"; TEMP_POLICY=0; fi; }
trap _apt_cleanup_policy EXIT

apt_missing() { # pkg... -> prints those not installed
  local p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' \
      || printf '%s\n' "$p"
  done
}

apt_install() { # [--no-install-recommends] pkg...
  local opts=() missing=() sim
  if [ "${1:-}" = --no-install-recommends ]; then opts+=("$1"); shift; fi
  mapfile -t missing < <(apt_missing "$@")
  if [ ${#missing[@]} -eq 0 ]; then log "apt: already installed: $*"; return 0; fi
  if ! sim=$("${APT[@]}" install -s -y "${opts[@]}" "${missing[@]}" 2>&1); then
    log "apt: ${missing[*]} not found; updating the package lists"
    "${APT[@]}" update -q
    sim=$("${APT[@]}" install -s -y "${opts[@]}" "${missing[@]}")
  fi
  if printf '%s\n' "$sim" | grep -Eq '^(Inst|Remv) (libc6|libc-bin) '; then
    die "installing ${missing[*]} would change libc6; refusing"
  fi
  if printf '%s\n' "$sim" | grep -q '^Remv '; then
    printf '%s\n' "$sim" | grep '^Remv ' >&2
    die "installing ${missing[*]} would remove packages; refusing"
  fi
  if [ ! -e "$POLICY" ]; then
    printf '#!/bin/sh\nexit 101\n' > "$POLICY"; chmod 755 "$POLICY"; TEMP_POLICY=1
  fi
  log "apt: installing ${missing[*]}"
  "${APT[@]}" install -y -q "${opts[@]}" "${missing[@]}"
}
