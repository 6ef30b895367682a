#!/usr/bin/env bash
# Installs the runtimes the real-runtime tests use (Debian packages) and starts dockerd when it
# is not running. Idempotent; run as root. Used by scripts/test.sh.
set -euo pipefail

# chromium + chromium-driver: the web UI test drives a real browser over WebDriver.
# nftables, conntrack, curl, dnsutils, socat: the networking tests (VIPs and routing mesh are nftables rules).
# etcd-client: the etcd API tests drive the real etcdctl (3.4); etcd-server: the conformance test
# (crates/shoal/tests/etcd_conformance.rs) and scripts/bench-etcd.sh compare with a real etcd 3.4.
# systemd: only for `systemd-analyze verify` of packaging/shoal.service (tests/packaging.rs); it
# is not started.
want=(runc docker.io busybox-static docker-registry apache2-utils iproute2 chromium chromium-driver nftables conntrack curl dnsutils socat etcd-client etcd-server systemd)
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
    # Its own session: a job runner that kills the caller's process group on exit (CI steps,
    # shells with job control) must not take dockerd with it.
    setsid nohup /usr/sbin/dockerd >>/var/log/shoal-test-dockerd.log 2>&1 </dev/null &
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

# The metrics test checks /metrics with the Prometheus project's own OpenMetrics parser.
if ! python3 -c 'import prometheus_client.openmetrics.parser' 2>/dev/null; then
    echo "==> installing the prometheus_client parser (PyPI)"
    python3 -m pip install -q --disable-pip-version-check prometheus-client 2>&1 | grep -v "Running pip as the 'root'" || true
    python3 -c 'import prometheus_client.openmetrics.parser'
fi

# The Chronos API test drives the real Chronos client library (Yelp's chronos-python, pure Python).
if ! python3 -c 'import chronos' 2>/dev/null; then
    echo "==> installing chronos-python (PyPI)"
    python3 -m pip install -q --disable-pip-version-check chronos-python==1.2.1 2>&1 | grep -v "Running pip as the 'root'" || true
    python3 -c 'import chronos'
fi

# The OpenAPI test (crates/shoal/tests/schemathesis.rs) runs the real schemathesis against
# /v1/openapi.json: in a venv of its own (its many dependencies stay out of the system Python).
ST_VENV=/opt/shoal-schemathesis
ST_VERSION=4.32.5
if ! "$ST_VENV/bin/st" --version 2>/dev/null | grep -q "version $ST_VERSION\$"; then
    echo "==> installing schemathesis $ST_VERSION (PyPI) into $ST_VENV"
    if ! /usr/bin/python3 -m venv --help >/dev/null 2>&1 || ! /usr/bin/python3 -c 'import ensurepip' 2>/dev/null; then
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends python3-venv >/dev/null
    fi
    rm -rf "$ST_VENV"
    /usr/bin/python3 -m venv "$ST_VENV"
    "$ST_VENV/bin/pip" install -q --disable-pip-version-check "schemathesis==$ST_VERSION"
    "$ST_VENV/bin/st" --version
fi

# CRIU >= 4 for checkpoint/restore (Debian 12's 3.17 fails `criu check` on this kernel): Debian 13's
# criu in a private prefix, see scripts/install-criu.sh.
bash "$(dirname "$0")/install-criu.sh"
