#!/usr/bin/env bash
# Service networking figures on two simulated hosts (network namespaces on one bridge; the
# daemons run under `nsenter --net`, so VXLAN, nftables and the resolver are the real ones):
#   1. a new task's start → reachable by name through its VIP from a task on the other host;
#   2. TCP throughput (iperf3, 5 s) host to host on the underlay, task to task over VXLAN, and
#      through the VIP; request latency (curl) task → VIP.
# Needs root, iproute2, nftables, conntrack, iperf3, curl, dig, busybox. Usage: scripts/bench-net.sh
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked -p shoal >/dev/null
bin=$PWD/target/release/shoal
tag=bn$$
dir=$(mktemp -d)
cleanup() {
    pkill -f "$dir/" 2>/dev/null || true
    sleep 0.5
    for ns in $(ip netns list | awk '{print $1}'); do
        case "$ns" in "$tag"-*) ip netns del "$ns" ;; esac
    done
    for id in $(cat "$dir"/h*/data/node.json 2>/dev/null | grep -o '"node_id": *"[a-z0-9]*"' | sed 's/.*"\([a-z0-9]*\)"$/\1/' | cut -c1-8); do
        for ns in $(ip netns list | awk '{print $1}' | grep "^shoal-$id-" || true); do ip netns del "$ns"; done
    done
    rm -rf "$dir"
}
trap cleanup EXIT
ip netns add $tag-ul
ip -n $tag-ul link add name ulbr type bridge && ip -n $tag-ul link set ulbr up
for i in 1 2; do
    ip netns add $tag-h$i
    ip -n $tag-ul link add u$i type veth peer name eth0 netns $tag-h$i
    ip -n $tag-ul link set u$i master ulbr up
    ip -n $tag-h$i addr add 198.51.100.$i/24 dev eth0 && ip -n $tag-h$i link set eth0 up && ip -n $tag-h$i link set lo up
    mkdir -p "$dir/h$i"
    nsenter --net=/run/netns/$tag-h$i "$bin" daemon --data-dir "$dir/h$i/data" --api-socket "$dir/h$i/sock" \
        --listen-addr 198.51.100.$i:4242 --ui-addr off --hostname h$i 2>"$dir/h$i/log" &
done
s1() { "$bin" -H "unix://$dir/h1/sock" "$@"; }
for _ in $(seq 100); do [ -S "$dir/h2/sock" ] && break; sleep 0.1; done
s1 cluster init >/dev/null
"$bin" -H "unix://$dir/h2/sock" cluster join --token "$(s1 cluster join-token worker -q)" 198.51.100.1:4242 >/dev/null
until [ "$(s1 node ls -q | wc -l)" = 2 ]; do sleep 0.2; done
s1 network create bench >/dev/null
task_ns() { # service → its running task's namespace
    s1 service ps "$1" --format json | python3 -c '
import json,sys
t=[t for t in json.load(sys.stdin) if t["status"]["state"]=="running"][0]
print("shoal-%s-t-%s %s" % (t["node_id"][:8], t["id"], t["networks"][0]["addrs"][0].split("/")[0]))'
}
s1 service create -d --name client --driver process --network bench --constraint node.hostname==h2 sleep 3600 >/dev/null
until task_ns client >/dev/null 2>&1; do sleep 0.1; done
read -r cns _ < <(task_ns client)
mkdir -p "$dir/www" && head -c 100 /dev/zero > "$dir/www/index.html"

if [ "${1:-}" != --skip-start ]; then
echo "== start to reachable by name (web on h1, asked from a task on h2), 5 runs"
for run in 1 2 3 4 5; do
    s1 service create -d --name web --driver process --network bench --constraint node.hostname==h1 \
        busybox httpd -f -p 80 -h "$dir/www" >/dev/null
    until task_ns web >/dev/null 2>&1; do sleep 0.01; done
    start=$(s1 service ps web --format json | python3 -c 'import json,sys; print([t for t in json.load(sys.stdin) if t["status"]["state"]=="running"][0]["status"]["timestamp"])')
    dns=$(grep nameserver "$dir/h2/data/agent/net/resolv/$(basename "${cns#*-t-}").conf" | cut -d' ' -f2)
    until nsenter --net=/run/netns/$cns sh -c "curl -s -o /dev/null -m 1 http://\$(dig +short +time=1 @$dns web)/" 2>/dev/null; do sleep 0.01; done
    python3 -c "
import datetime,sys
s=datetime.datetime.fromisoformat(sys.argv[1][:26])
print('run %s: %.0f ms from running to answering by name' % (sys.argv[2], (datetime.datetime.utcnow()-s).total_seconds()*1000))" "$start" $run
    s1 service rm web >/dev/null
    while s1 service ps web >/dev/null 2>&1; do sleep 0.1; done
done

fi
echo "== throughput (iperf3 -t 5) and latency"
s1 service create -d --name perf --driver process --network bench --constraint node.hostname==h1 iperf3 -s >/dev/null
until task_ns perf >/dev/null 2>&1; do sleep 0.1; done
read -r _ pip < <(task_ns perf)
vip=$(s1 service inspect perf --format json | python3 -c 'import json,sys; v=json.load(sys.stdin); v=v[0] if isinstance(v,list) else v; print(v["endpoint"]["vips"][0]["addr"].split("/")[0])')
nsenter --net=/run/netns/$tag-h1 iperf3 -s -D -p 5202 --logfile "$dir/iperf.log"
sleep 1
bw() { awk '/receiver/ {print $(NF-2), $(NF-1)}'; }
echo "underlay host→host:      $(nsenter --net=/run/netns/$tag-h2 iperf3 -c 198.51.100.1 -p 5202 -t 5 | bw)"
echo "overlay task→task:       $(nsenter --net=/run/netns/$cns iperf3 -c "$pip" -t 5 | bw)"
echo "overlay task→VIP:        $(nsenter --net=/run/netns/$cns iperf3 -c "$vip" -t 5 | bw)"
s1 service create -d --name web --driver process --network bench --constraint node.hostname==h1 \
    busybox httpd -f -p 80 -h "$dir/www" >/dev/null
until task_ns web >/dev/null 2>&1; do sleep 0.1; done
read -r _ wip < <(task_ns web)
wvip=$(s1 service inspect web --format json | python3 -c 'import json,sys; v=json.load(sys.stdin); v=v[0] if isinstance(v,list) else v; print(v["endpoint"]["vips"][0]["addr"].split("/")[0])')
nsenter --net=/run/netns/$tag-h1 sh -c "busybox httpd -p 198.51.100.1:8081 -h $dir/www"
lat() { for _ in $(seq 200); do curl -s -o /dev/null -w '%{time_total}\n' "$1"; done | sort -n | awk '{a[NR]=$1} END {printf "p50 %.0f µs, p99 %.0f µs", a[int(NR*0.5)]*1e6, a[int(NR*0.99)]*1e6}'; }
echo "HTTP underlay host→host: $(nsenter --net=/run/netns/$tag-h2 bash -c "$(declare -f lat); lat http://198.51.100.1:8081/")"
echo "HTTP task→task:          $(nsenter --net=/run/netns/$cns bash -c "$(declare -f lat); lat http://$wip/")"
echo "HTTP task→VIP:           $(nsenter --net=/run/netns/$cns bash -c "$(declare -f lat); lat http://$wvip/")"
dns=$(grep nameserver "$dir/h2/data/agent/net/resolv/$(basename "${cns#*-t-}").conf" | cut -d' ' -f2)
echo "resolver (UDP, from a task on h2 to its node's resolver): $(nsenter --net=/run/netns/$cns python3 scripts/bench-dns.py "$dns" web 20000)"
