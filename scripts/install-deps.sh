#!/usr/bin/env bash
# Installs the runtimes the real-runtime tests use (Debian packages) and starts dockerd when it
# is not running. Idempotent; run as root. Used by scripts/test.sh.
set -euo pipefail

want=(runc docker.io busybox-static docker-registry iproute2)
missing=()
for p in "${want[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    echo "==> installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# dockerd: start it ourselves (no systemd here); wait for its socket to answer.
if ! /usr/bin/docker -H unix:///var/run/docker.sock version >/dev/null 2>&1; then
    echo "==> starting dockerd"
    mkdir -p /var/log
    nohup /usr/sbin/dockerd >/var/log/shoal-test-dockerd.log 2>&1 &
    for _ in $(seq 1 120); do
        /usr/bin/docker -H unix:///var/run/docker.sock version >/dev/null 2>&1 && break
        sleep 0.5
    done
    /usr/bin/docker -H unix:///var/run/docker.sock version >/dev/null 2>&1 || {
        echo "dockerd did not start; see /var/log/shoal-test-dockerd.log" >&2
        tail -n 30 /var/log/shoal-test-dockerd.log >&2 || true
        exit 1
    }
fi
