#!/usr/bin/env python3
"""STARTTLS handshakes per second against a running lqd, from an independent TLS client
(Python's ssl module, OpenSSL): a cross-check of `loadgen active --tls`'s connect figures
(BENCHMARKS.md, "TLS").

N connections are opened by PAR threads; each sends STARTTLS (RFC 7653) as its first frame,
reads lqd's answer, runs the TLS handshake on the same socket and is then kept open (so the
server holds every session, as in the fan-out), until all N are up. Prints the rate and the
per-connection STARTTLS and handshake times (p50, p99).

    python3 loadgen/scripts/tls_handshakes.py --port 15547 --ca ca.pem -n 1000 --parallel 96
"""

import argparse
import socket
import ssl
import struct
import sys
import threading
import time

STARTTLS = 23
# OPTION_CLIENTID with a DUID-LL (type 3, hardware type 1, six octets).
CLIENT_ID = struct.pack("!HH", 1, 10) + bytes([0, 3, 0, 1, 1, 2, 3, 4, 5, 6])


def read_exact(sock, n):
    out = b""
    while len(out) < n:
        chunk = sock.recv(n - len(out))
        if not chunk:
            raise EOFError("lqd closed the connection")
        out += chunk
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="::1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--ca", required=True, help="PEM file of the CA that signed lqd's certificate")
    ap.add_argument("--server-name", default="localhost")
    ap.add_argument("-n", type=int, default=1000, help="connections")
    ap.add_argument("--parallel", type=int, default=96, help="handshakes under way at once")
    args = ap.parse_args()

    ctx = ssl.create_default_context(cafile=args.ca)
    ctx.check_hostname = args.server_name is not None
    times, keep, errors = [], [], []
    lock = threading.Lock()

    def one(i):
        t0 = time.monotonic()
        s = socket.create_connection((args.host, args.port))
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        msg = bytes([STARTTLS]) + (i & 0xFFFFFF).to_bytes(3, "big") + CLIENT_ID
        s.sendall(struct.pack("!H", len(msg)) + msg)
        (length,) = struct.unpack("!H", read_exact(s, 2))
        answer = read_exact(s, length)
        if answer[0] != STARTTLS:
            raise RuntimeError(f"lqd answered STARTTLS with message type {answer[0]}")
        t1 = time.monotonic()
        ts = ctx.wrap_socket(s, server_hostname=args.server_name)
        t2 = time.monotonic()
        with lock:
            times.append((t1 - t0, t2 - t1))
            keep.append(ts)

    def worker(k):
        for i in range(k, args.n, args.parallel):
            try:
                one(i)
            except Exception as e:  # noqa: BLE001 - reported below, counted as failed
                with lock:
                    errors.append(f"{type(e).__name__}: {e}")

    started = time.monotonic()
    threads = [threading.Thread(target=worker, args=(k,)) for k in range(args.parallel)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - started
    if errors:
        print(f"{len(errors)} failed, the first: {errors[0]}", file=sys.stderr)
    if not times:
        sys.exit(1)
    st = sorted(t[0] for t in times)
    hs = sorted(t[1] for t in times)

    def pct(v, p):
        return v[min(len(v) - 1, int(len(v) * p))] * 1000

    print(
        f"{len(times)} of {args.n} up in {elapsed:.2f} s: {len(times) / elapsed:.0f} handshakes/s; "
        f"STARTTLS answer p50 {pct(st, 0.5):.1f} ms p99 {pct(st, 0.99):.1f} ms; "
        f"handshake p50 {pct(hs, 0.5):.1f} ms p99 {pct(hs, 0.99):.1f} ms"
    )
    for ts in keep:
        ts.close()
    sys.exit(1 if errors else 0)


if __name__ == "__main__":
    main()
