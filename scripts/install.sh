#!/usr/bin/env bash
# Installs a built Shoal on this machine (or under DESTDIR for a package):
#   the binary          $PREFIX/bin/shoal                  (PREFIX defaults to /usr/local)
#   the task shim       $PREFIX/bin/shoal-shim             (from beside the binary; optional:
#                                                           without it tasks run under `shoal shim`)
#   its debug info      /usr/lib/debug$PREFIX/bin/shoal.debug (stripped from the binary)
#   the configuration   /etc/shoal/shoal.toml (0600)       (never overwritten if present)
#   the systemd unit    /etc/systemd/system/shoal.service  (ExecStart names $PREFIX/bin/shoal)
#   man pages           $PREFIX/share/man/man1/shoal*.1
#   completions         bash, zsh and fish
# Usage: scripts/install.sh [path/to/shoal]   (default: target/release/shoal, built if missing)
# Then: edit /etc/shoal/shoal.toml (init = true on the first manager, a [join] section on the
# others), `systemctl daemon-reload && systemctl enable --now shoal`.
set -euo pipefail
cd "$(dirname "$0")/.."
PREFIX="${PREFIX:-/usr/local}"
DESTDIR="${DESTDIR:-}"
BIN="${1:-target/release/shoal}"
if [ ! -x "$BIN" ]; then
    cargo build --release --locked -p shoal
fi
root="$DESTDIR"
install -d "$root$PREFIX/bin" "$root/etc/shoal" "$root/etc/systemd/system" \
    "$root$PREFIX/share/man/man1" "$root$PREFIX/share/bash-completion/completions" \
    "$root$PREFIX/share/zsh/site-functions" "$root$PREFIX/share/fish/vendor_completions.d"
chmod 0700 "$root/etc/shoal"
# The binary goes in without its debug information; that goes to a separate file where gdb and
# Rust's backtraces look for it (the binary's .gnu_debuglink names it): /usr/lib/debug + the
# binary's directory, as Debian's and Fedora's debug packages do.
debug_dir="$root/usr/lib/debug$PREFIX/bin"
install -d "$debug_dir"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
command -v objcopy >/dev/null || { echo "objcopy not found: install binutils" >&2; exit 1; }
objcopy --only-keep-debug "$BIN" "$tmp/shoal.debug"
bin_abs="$(realpath "$BIN")"
(cd "$tmp" && objcopy --strip-debug --add-gnu-debuglink=shoal.debug "$bin_abs" shoal)
install -m 0644 "$tmp/shoal.debug" "$debug_dir/shoal.debug"
install -m 0755 "$tmp/shoal" "$root$PREFIX/bin/shoal"
# The shim runs beside every task, so it goes in stripped of everything but its symbols.
shim="$(dirname "$bin_abs")/shoal-shim"
if [ -x "$shim" ]; then
    objcopy --strip-debug "$shim" "$tmp/shoal-shim"
    install -m 0755 "$tmp/shoal-shim" "$root$PREFIX/bin/shoal-shim"
else
    echo "no shoal-shim beside $BIN: tasks will run under \`shoal shim\`" >&2
fi
if [ -e "$root/etc/shoal/shoal.toml" ]; then
    echo "keeping $root/etc/shoal/shoal.toml (packaging/shoal.toml is the default)"
else
    install -m 0600 packaging/shoal.toml "$root/etc/shoal/shoal.toml"
fi
sed "s#/usr/local/bin/shoal#$PREFIX/bin/shoal#" packaging/shoal.service >"$root/etc/systemd/system/shoal.service"
chmod 0644 "$root/etc/systemd/system/shoal.service"
"$BIN" man --out "$root$PREFIX/share/man/man1" >/dev/null
"$BIN" completion bash >"$root$PREFIX/share/bash-completion/completions/shoal"
"$BIN" completion zsh >"$root$PREFIX/share/zsh/site-functions/_shoal"
"$BIN" completion fish >"$root$PREFIX/share/fish/vendor_completions.d/shoal.fish"
if command -v systemd-analyze >/dev/null 2>&1 && [ -z "$DESTDIR" ]; then
    systemd-analyze verify --man=no "$root/etc/systemd/system/shoal.service"
fi
echo "installed shoal into ${DESTDIR:-/}$PREFIX"
