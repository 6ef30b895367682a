#!/usr/bin/env python3
# UDP DNS load for scripts/bench-net.sh: N queries for NAME to SERVER, 32 in flight; prints q/s and latency.
# Usage: bench-dns.py SERVER NAME N
import socket, struct, time, sys
server, name, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
def q(i):
    hdr = struct.pack(">HHHHHH", i & 0xffff, 0x0100, 1, 0, 0, 0)
    qn = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0"
    return hdr + qn + struct.pack(">HH", 1, 1)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(2)
lat = []
t0 = time.perf_counter()
window = 32; sent = 0; got = 0; inflight = {}; answered = 0
while got < n:
    while sent < n and len(inflight) < window:
        inflight[sent & 0xffff] = time.perf_counter(); s.sendto(q(sent), (server, 53)); sent += 1
    data = s.recv(4096)
    i, flags, _, ancount = struct.unpack(">HHHH", data[:8])
    answered += (flags & 0xF) == 0 and ancount > 0
    st = inflight.pop(i, None)
    if st is not None:
        lat.append(time.perf_counter() - st); got += 1
el = time.perf_counter() - t0
lat.sort()
print("%d queries (%d answered with a record) in %.2f s: %.0f q/s, p50 %.0f µs, p99 %.0f µs (32 in flight)" % (n, answered, el, n/el, lat[len(lat)//2]*1e6, lat[int(len(lat)*0.99)]*1e6))
