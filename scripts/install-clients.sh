#!/usr/bin/env bash
# install-clients.sh - install the OCI registry clients and peer registries
# that were verified to work on Debian 12 (bookworm, amd64) WITHOUT
# upgrading libc6. Idempotent: a second run only checks and prints.
# oci-ref's copy of the team's shared tool; `make clients` runs it, and
# `make test` runs it (as root on Debian) for the clients the tests use.
#
#   sudo ./install-clients.sh            # everything
#   OCI_CLIENTS_COMPONENTS="apt oras crane" sudo ./install-clients.sh
#   . /opt/oci-clients/env.sh            # afterwards: puts the prefix bin/ on PATH
#
# Components (default: all):
#   apt       bookworm packages: docker-registry skopeo umoci podman buildah
#   engines   bookworm packages containerd docker.io (--no-install-recommends);
#             the daemons are never started by this script
#   oras      trixie oras binary, unpacked with dpkg -x (needs libc6 >= 2.34)
#   cosign    trixie cosign binary, unpacked with dpkg -x (needs libc6 >= 2.34)
#   skopeo118 trixie skopeo 1.18 + a private trixie glibc/gpgme/sqlite runtime,
#             run through the private dynamic loader (wrapper: skopeo-1.18)
#   crane     crane built offline from trixie golang-*-dev source packages
#             with a Go 1.24 toolchain (GOPATH mode, GOPROXY=off)
#   oraspy    oras-py (PyPI "oras") in a venv under the prefix
#   chromium  bookworm chromium (headless, for the web view's browser tests, driven
#             by playwright with executable_path=/usr/bin/chromium) + fonts
#
# Environment:
#   OCI_CLIENTS_PREFIX      install prefix (default /opt/oci-clients)
#   OCI_CLIENTS_COMPONENTS  space separated subset of the list above
#   OCI_GOROOT              an existing Go >= 1.22 GOROOT to build crane with;
#                           if unset, golang-1.24-go/-src are fetched from
#                           trixie and unpacked under the prefix
#   OCI_ORAS_PY_VERSION     oras-py version (default 0.2.43)
#   PYTHON                  interpreter for the oras-py venv (default python3)
#   OCI_CLIENTS_APT_UPDATE  set to 1 to run "apt-get update" first
#
# Requirements: root; Debian 12 apt sources (the trixie suite is added,
# pinned at priority 100, when missing); access to the Debian archive; PyPI only
# for the oraspy component. libc6 is never upgraded: every apt-get install
# is simulated first and the script aborts if libc6 would change.
set -euo pipefail

PREFIX=${OCI_CLIENTS_PREFIX:-/opt/oci-clients}
COMPONENTS=${OCI_CLIENTS_COMPONENTS:-apt engines oras cosign skopeo118 crane oraspy chromium}
ORAS_PY_VERSION=${OCI_ORAS_PY_VERSION:-0.2.43}
PYTHON=${PYTHON:-python3}
export DEBIAN_FRONTEND=noninteractive

. "$(dirname "$0")/apt.sh"  # log, die, apt_install
want() { case " $COMPONENTS " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }

[ "$(id -u)" = 0 ] || die "run as root"
[ "$(dpkg --print-architecture)" = amd64 ] || die "only tested on amd64"
mkdir -p "$PREFIX/bin" "$PREFIX/debs" "$PREFIX/root" "$PREFIX/etc"

# Debian 13 (trixie) packages are only unpacked or used as sources, never
# installed; add the suite, pinned low, if the apt sources lack it.
if ! grep -rqs "trixie" /etc/apt/sources.list /etc/apt/sources.list.d/; then
  log "apt: adding the trixie suite (pinned at priority 100)"
  cat > /etc/apt/sources.list.d/oci-clients-trixie.sources <<'SRC'
Types: deb
URIs: http://deb.debian.org/debian
Suites: trixie
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
  printf 'Package: *\nPin: release n=trixie\nPin-Priority: 100\n' > /etc/apt/preferences.d/oci-clients-trixie
  OCI_CLIENTS_APT_UPDATE=1
fi
if [ "${OCI_CLIENTS_APT_UPDATE:-0}" = 1 ]; then apt-get update; fi

# ---------------------------------------------------------------- apt ----
# apt_install (scripts/apt.sh): simulated first, no libc6 change, no removal, no
# daemon started by a postinst, waits for another apt run's lock.

if want apt; then
  # apache2-utils (htpasswd -B) and openssl: the auth and TLS tests make their
  # credentials and certificates with the real tools.
  apt_install docker-registry skopeo umoci podman buildah apache2-utils openssl
fi
if want engines; then
  apt_install --no-install-recommends containerd docker.io
fi
if want chromium; then
  # Debian's own build: the tests never download a browser. Fonts so screenshots
  # show text; no recommends (they pull in desktop services).
  apt_install --no-install-recommends chromium fonts-liberation fonts-dejavu-core
  /usr/bin/chromium --headless --no-sandbox --version >/dev/null || die "chromium does not run"
fi

# ------------------------------------------------------ trixie debs ----
trixie_version() { # pkg -> version string in trixie
  apt-cache madison "$1" | awk -F'|' '!done && $3 ~ / trixie\// { gsub(/ /, "", $2); print $2; done = 1 }'
}

deb_file() { # pkg version -> path of the cached .deb, or nothing
  local m=("$PREFIX/debs/${1}_${2//:/%3a}_"*.deb)
  if [ -e "${m[0]}" ]; then printf '%s\n' "${m[0]}"; fi
}

FETCHED=()
fetch_trixie() { # pkg... ; sets FETCHED to the .deb paths (downloads if absent)
  local p v f
  FETCHED=()
  for p in "$@"; do
    v=$(trixie_version "$p")
    [ -n "$v" ] || die "no trixie version of $p (trixie missing from apt sources, or run apt-get update)"
    f=$(deb_file "$p" "$v")
    if [ -z "$f" ]; then
      (cd "$PREFIX/debs" && apt-get -q -o APT::Sandbox::User=root download "$p=$v" >&2)
      f=$(deb_file "$p" "$v")
    fi
    [ -n "$f" ] && [ -s "$f" ] || die "download of $p=$v failed"
    FETCHED+=("$f")
  done
}

unpack_debs() { # destdir deb... ; re-extracts only when the deb set changes
  local dest=$1; shift
  [ $# -gt 0 ] || die "unpack_debs: no .deb given for $dest"
  local stamp; stamp=$(printf '%s\n' "$@" | xargs -n1 basename | sort)
  if [ -f "$dest/.debs" ] && [ "$(cat "$dest/.debs")" = "$stamp" ]; then return 0; fi
  rm -rf "$dest"; mkdir -p "$dest"
  local d; for d in "$@"; do dpkg -x "$d" "$dest"; done
  printf '%s\n' "$stamp" > "$dest/.debs"
}

if want oras; then
  fetch_trixie oras
  unpack_debs "$PREFIX/root/oras" "${FETCHED[@]}"
  ln -sfn ../root/oras/usr/bin/oras "$PREFIX/bin/oras"
  "$PREFIX/bin/oras" version >/dev/null || die "oras does not run"
fi

if want cosign; then
  fetch_trixie cosign
  unpack_debs "$PREFIX/root/cosign" "${FETCHED[@]}"
  ln -sfn ../root/cosign/usr/bin/cosign "$PREFIX/bin/cosign"
  "$PREFIX/bin/cosign" version >/dev/null 2>&1 || die "cosign does not run"
fi

if want skopeo118; then
  # trixie skopeo needs GLIBC_2.38; bookworm has 2.36. Instead of upgrading
  # libc6, unpack trixie's libc6 and skopeo's shared-library deps into a
  # private root and start skopeo through that root's dynamic loader.
  fetch_trixie skopeo libc6 libgpgme11t64 libassuan9 libgpg-error0 libsqlite3-0
  unpack_debs "$PREFIX/root/skopeo-1.18" "${FETCHED[@]}"
  cat > "$PREFIX/bin/skopeo-1.18" <<EOF
#!/bin/sh
# trixie skopeo run with a private trixie glibc (system libc6 untouched)
R="$PREFIX/root/skopeo-1.18"
L="\$R/usr/lib/x86_64-linux-gnu"
exec "\$L/ld-linux-x86-64.so.2" --library-path "\$L" "\$R/usr/bin/skopeo" "\$@"
EOF
  chmod 755 "$PREFIX/bin/skopeo-1.18"
  "$PREFIX/bin/skopeo-1.18" --version >/dev/null || die "skopeo-1.18 does not run"
fi

# -------------------------------------------------------------- crane ----
# go-containerregistry's Debian -dev package ships cmd/crane as source. Its
# Debian Depends pull ~400 packages (and, via libc6-dev, a libc6 upgrade),
# but crane itself only imports the 18 source packages below, so these are
# fetched with "apt-get download" and unpacked, never installed.
CRANE_SRC_DEBS=(
  golang-github-google-go-containerregistry-dev
  golang-github-containerd-stargz-snapshotter-dev
  golang-github-docker-docker-dev
  golang-github-docker-distribution-dev
  golang-github-docker-docker-credential-helpers-dev
  golang-github-google-go-cmp-dev
  golang-github-klauspost-compress-dev
  golang-github-cespare-xxhash-dev
  golang-github-mitchellh-go-homedir-dev
  golang-github-opencontainers-go-digest-dev
  golang-github-opencontainers-image-spec-dev
  golang-github-spf13-cobra-dev
  golang-github-spf13-pflag-dev
  golang-github-pkg-errors-dev
  golang-github-sirupsen-logrus-dev
  golang-github-vbatts-tar-split-dev
  golang-golang-x-sync-dev
  golang-golang-x-sys-dev
)

if want crane; then
  ggcr_ver=$(trixie_version golang-github-google-go-containerregistry-dev)
  ggcr_ver=${ggcr_ver%%+*}                   # 0.20.1+ds1-1 -> 0.20.1
  want_ver="v${ggcr_ver}-debian"
  have_ver=$("$PREFIX/bin/crane" version 2>/dev/null || true)
  if [ "$have_ver" = "$want_ver" ]; then
    log "crane $have_ver already built"
  else
    if [ -n "${OCI_GOROOT:-}" ]; then
      GOROOT_USE=$OCI_GOROOT
    else
      fetch_trixie golang-1.24-go golang-1.24-src
      unpack_debs "$PREFIX/root/go" "${FETCHED[@]}"
      GOROOT_USE="$PREFIX/root/go/usr/lib/go-1.24"
    fi
    [ -x "$GOROOT_USE/bin/go" ] || die "no go binary in $GOROOT_USE"
    fetch_trixie "${CRANE_SRC_DEBS[@]}"
    unpack_debs "$PREFIX/root/gocode" "${FETCHED[@]}"
    build_tmp=$(mktemp -d)
    log "building crane $want_ver (GOROOT=$GOROOT_USE)"
    (
      export GOROOT="$GOROOT_USE" PATH="$GOROOT_USE/bin:$PATH"
      export GOTOOLCHAIN=local GOPROXY=off GOFLAGS= GO111MODULE=off CGO_ENABLED=0
      export GOPATH="$PREFIX/root/gocode/usr/share/gocode" GOCACHE="$build_tmp/cache"
      cd "$GOPATH/src/github.com/google/go-containerregistry"
      go build -trimpath \
        -ldflags "-s -w -X github.com/google/go-containerregistry/cmd/crane/cmd.Version=$want_ver" \
        -o "$PREFIX/bin/crane.new" ./cmd/crane
    )
    rm -rf "$build_tmp"
    mv -f "$PREFIX/bin/crane.new" "$PREFIX/bin/crane"
    [ "$("$PREFIX/bin/crane" version)" = "$want_ver" ] || die "crane build check failed"
  fi
fi

# ------------------------------------------------------------- oras-py ----
if want oraspy; then
  if "$PREFIX/py/bin/python" -c "import importlib.metadata as m, sys; sys.exit(m.version('oras') != '$ORAS_PY_VERSION')" 2>/dev/null; then
    log "oras-py $ORAS_PY_VERSION already in $PREFIX/py"
  else
    "$PYTHON" -m venv "$PREFIX/py"
    "$PREFIX/py/bin/python" -m pip install -q "oras==$ORAS_PY_VERSION"
  fi
fi

# --------------------------------------------------- helper files ----
# insecure (plain HTTP) registries.conf for 127.0.0.1:5000 and :5001, for
# CONTAINERS_REGISTRIES_CONF=... (podman/buildah) or skopeo --registries-conf
cat > "$PREFIX/etc/registries-local.conf" <<'EOF'
unqualified-search-registries = []

[[registry]]
location = "127.0.0.1:5000"
insecure = true

[[registry]]
location = "127.0.0.1:5001"
insecure = true
EOF

# oci-local-registry DATADIR [ADDR]: run CNCF distribution (docker-registry)
# in the foreground on ADDR (default 127.0.0.1:5000), storing in DATADIR.
cat > "$PREFIX/bin/oci-local-registry" <<'EOF'
#!/bin/sh
set -eu
[ $# -ge 1 ] || { echo "usage: oci-local-registry DATADIR [ADDR]" >&2; exit 2; }
data=$1; addr=${2:-127.0.0.1:5000}
mkdir -p "$data/storage"
cat > "$data/config.yml" <<CFG
version: 0.1
log:
  level: info
  fields:
    service: registry
storage:
  filesystem:
    rootdirectory: $data/storage
  delete:
    enabled: true
  cache:
    blobdescriptor: inmemory
http:
  addr: $addr
  headers:
    X-Content-Type-Options: [nosniff]
CFG
exec docker-registry serve "$data/config.yml"
EOF
chmod 755 "$PREFIX/bin/oci-local-registry"

cat > "$PREFIX/env.sh" <<EOF
# source me: puts the OCI client prefix on PATH
case ":\$PATH:" in *":$PREFIX/bin:"*) ;; *) export PATH="$PREFIX/bin:\$PATH" ;; esac
EOF

# ------------------------------------------------------------ report ----
{
  printf 'components: %s\n' "$COMPONENTS"
  for p in docker-registry skopeo umoci podman buildah containerd docker.io; do
    v=$(dpkg-query -W -f='${Version}' "$p" 2>/dev/null || true)
    [ -n "$v" ] && printf '%-18s %s (bookworm apt)\n' "$p" "$v"
  done
  for d in "$PREFIX"/root/*/.debs; do
    [ -f "$d" ] && printf '%-18s %s\n' "$(basename "$(dirname "$d")")" "$(tr '\n' ' ' < "$d")"
  done
  [ -x "$PREFIX/bin/crane" ] && printf '%-18s %s (built)\n' crane "$("$PREFIX/bin/crane" version)"
  [ -x "$PREFIX/py/bin/python" ] && printf '%-18s %s (venv)\n' oras-py \
    "$("$PREFIX/py/bin/python" -c 'import importlib.metadata as m; print(m.version("oras"))')"
  true
} > "$PREFIX/VERSIONS.txt"
cat "$PREFIX/VERSIONS.txt"
log "done. Use: . $PREFIX/env.sh"
