#!/usr/bin/env bash
# Provides CRIU >= 4.0 for checkpoint/restore (runc checkpoint/restore run `criu` from PATH).
#
# Debian 12's criu (3.17) fails `criu check` on current kernels. This script takes Debian 13
# (trixie)'s criu and the libraries it needs, libc included, and unpacks them into a private prefix
# (default /opt/shoal/criu): nothing is installed with dpkg, the system's libc and apt state are
# untouched (a private apt config dir is used for the download only). A wrapper
# (default /usr/local/sbin/criu) runs the prefix's dynamic loader with --library-path on the
# prefix's libraries, so nothing leaks into the processes CRIU restores (no LD_LIBRARY_PATH).
#
# Idempotent; run as root. Exits at once when a working criu >= 4 is already on PATH. Exits
# non-zero when `criu check` fails at the end.
#
# Environment: SHOAL_CRIU_PREFIX, SHOAL_CRIU_WRAPPER, SHOAL_CRIU_MIRROR, SHOAL_CRIU_SECURITY_MIRROR,
# SHOAL_CRIU_SUITE (default trixie), SHOAL_CRIU_FORCE=1 (reinstall even when a working criu exists).
set -euo pipefail

PREFIX=${SHOAL_CRIU_PREFIX:-/opt/shoal/criu}
WRAPPER=${SHOAL_CRIU_WRAPPER:-/usr/local/sbin/criu}
SUITE=${SHOAL_CRIU_SUITE:-trixie}
MIRROR=${SHOAL_CRIU_MIRROR:-http://deb.debian.org/debian}
SECURITY_MIRROR=${SHOAL_CRIU_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg

log() { echo "==> install-criu: $*"; }
die() {
    echo "install-criu: $*" >&2
    exit 1
}

# Prints the major version of the criu at $1, or nothing.
criu_major() {
    "$1" --version 2>/dev/null | sed -n 's/^Version: *\([0-9][0-9]*\)\..*/\1/p' | head -n1
}

# Succeeds when $1 is criu >= 4 and `criu check` passes.
criu_ok() {
    local major
    major=$(criu_major "$1")
    [[ -n "$major" && "$major" -ge 4 ]] || return 1
    "$1" check >/dev/null 2>&1
}

if [[ "${SHOAL_CRIU_FORCE:-0}" != 1 ]]; then
    current=$(PATH="$(dirname "$WRAPPER"):$PATH" command -v criu || true)
    if [[ -n "$current" ]] && criu_ok "$current"; then
        log "$current is $("$current" --version | sed -n 's/^Version: *//p' | head -n1) and 'criu check' passes; nothing to do"
        exit 0
    fi
fi

[[ $(id -u) -eq 0 ]] || die "must run as root"
for tool in apt-get apt-cache dpkg-deb dpkg; do
    command -v "$tool" >/dev/null || die "$tool not found (this script is for Debian)"
done
[[ -r "$KEYRING" ]] || die "$KEYRING missing (apt-get install debian-archive-keyring)"

arch=$(dpkg --print-architecture)
case "$arch" in
    amd64) triplet=x86_64-linux-gnu ;;
    arm64) triplet=aarch64-linux-gnu ;;
    *) die "unsupported architecture $arch" ;;
esac

work=$(mktemp -d /var/tmp/shoal-criu.XXXXXX)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/lists/partial" "$work/cache/archives/partial" "$work/etc/sources.list.d" \
    "$work/etc/preferences.d" "$work/debs"
: >"$work/status"
cat >"$work/etc/sources.list" <<EOF
deb [signed-by=$KEYRING target=Packages] $MIRROR $SUITE main
deb [signed-by=$KEYRING target=Packages] $SECURITY_MIRROR $SUITE-security main
EOF
# A private apt: own sources, lists, cache and (empty) dpkg status; the system's are not touched.
apt_opts=(
    -o "Dir::Etc::sourcelist=$work/etc/sources.list"
    -o "Dir::Etc::sourceparts=$work/etc/sources.list.d"
    -o "Dir::Etc::preferencesparts=$work/etc/preferences.d"
    -o "Dir::State::Lists=$work/lists"
    -o "Dir::Cache=$work/cache"
    -o "Dir::State::status=$work/status"
    -o "APT::Architecture=$arch"
    -o "APT::Sandbox::User=root"
)

log "fetching the $SUITE package index (private apt config in $work)"
apt-get "${apt_opts[@]}" -qq update || die "apt-get update for $SUITE failed"

# criu and everything it depends on (recursively), libc included.
mapfile -t pkgs < <(apt-cache "${apt_opts[@]}" depends --recurse --no-recommends --no-suggests \
    --no-conflicts --no-breaks --no-replaces --no-enhances criu | grep -v '^[ <]' | sort -u)
((${#pkgs[@]})) || die "could not resolve criu's dependencies in $SUITE"
version=$(apt-cache "${apt_opts[@]}" show --no-all-versions criu | sed -n 's/^Version: //p' | head -n1)
log "downloading criu $version and ${#pkgs[@]} packages: ${pkgs[*]}"
(cd "$work/debs" && apt-get "${apt_opts[@]}" -qq download "${pkgs[@]}") || die "apt-get download failed"

stage="$PREFIX.new"
rm -rf "$stage"
mkdir -p "$stage"
for deb in "$work"/debs/*.deb; do
    dpkg-deb -x "$deb" "$stage"
done
# Documentation and man pages are not needed.
rm -rf "$stage/usr/share/doc" "$stage/usr/share/man" "$stage/usr/share/lintian" "$stage/usr/share/locale"
printf '%s\n' "${pkgs[@]}" >"$stage/PACKAGES"
echo "$version" >"$stage/VERSION"

[[ -x "$stage/usr/sbin/criu" ]] || die "the criu package has no usr/sbin/criu"
loader=$(find "$stage/usr/lib/$triplet" "$stage/lib/$triplet" -maxdepth 1 -name 'ld-linux*.so.*' \
    2>/dev/null | head -n1 || true)
[[ -n "$loader" ]] || die "no dynamic loader found in the extracted libc6"
loader=${loader#"$stage"}
libdirs=()
for d in "usr/lib/$triplet" "lib/$triplet"; do
    [[ -d "$stage/$d" ]] && libdirs+=("$PREFIX/$d")
done
libpath=$(
    IFS=:
    echo "${libdirs[*]}"
)

# Swap in the new prefix (the old one may be in use by a running criu: moved, then removed).
if [[ -e "$PREFIX" ]]; then
    rm -rf "$PREFIX.old"
    mv "$PREFIX" "$PREFIX.old"
fi
mv "$stage" "$PREFIX"
rm -rf "$PREFIX.old"
log "unpacked into $PREFIX"

mkdir -p "$(dirname "$WRAPPER")"
cat >"$WRAPPER.tmp" <<EOF
#!/bin/sh
# Installed by Shoal's scripts/install-criu.sh: Debian $SUITE's criu $version with its own
# libraries from $PREFIX (the system's libc is too old for it).
exec $PREFIX$loader --library-path $libpath --argv0 "\$0" $PREFIX/usr/sbin/criu "\$@"
EOF
chmod 0755 "$WRAPPER.tmp"
mv "$WRAPPER.tmp" "$WRAPPER"
log "installed the wrapper $WRAPPER"

if [[ -x /usr/sbin/criu ]] && [[ "$(criu_major /usr/sbin/criu)" != "" ]] &&
    [[ "$(criu_major /usr/sbin/criu)" -lt 4 ]]; then
    log "note: an older /usr/sbin/criu exists; $WRAPPER comes first on the usual PATH"
fi

"$WRAPPER" --version
major=$(criu_major "$WRAPPER")
[[ -n "$major" && "$major" -ge 4 ]] || die "$WRAPPER does not report version 4.x"
if ! out=$("$WRAPPER" check 2>&1); then
    echo "$out" >&2
    die "'criu check' failed"
fi
log "'criu check': $out"
