#!/usr/bin/env python3
"""A leasequery requestor over STARTTLS (RFC 7653) with Python's ssl module (OpenSSL): an
independent TLS stack for lqd's tests (tests/server_tls.rs).

It connects over TCP, sends a STARTTLS message (type 23) as its first frame, reads the
server's answer, and when that is a STARTTLS starts TLS as the client on the same socket. Then
it sends the frames given with --send (hex, without the 2-octet length) inside TLS and prints
every frame it reads back, until a message of a type given with --until arrives, --frames
frames were read, or --seconds pass.

Output, one line each: `ANSWER <type> <hex>` for the server's answer to STARTTLS, `TLS
<version> <cipher>` once the handshake is done, `FRAME <type> <hex>` per frame read inside TLS,
`CLOSED` when the server closed, and `ERROR <kind> <message>` (exit status 2) on a failure.
"""

import argparse
import os
import socket
import ssl
import struct
import sys
import time

STARTTLS = 23
OPTION_CLIENTID = 1


def frame(msg: bytes) -> bytes:
    return struct.pack("!H", len(msg)) + msg


def read_exact(sock, n: int, deadline: float) -> bytes:
    out = b""
    while len(out) < n:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        chunk = sock.recv(n - len(out))
        if not chunk:
            raise EOFError("server closed the connection")
        out += chunk
    return out


def read_frame(sock, deadline: float) -> bytes:
    (n,) = struct.unpack("!H", read_exact(sock, 2, deadline))
    return read_exact(sock, n, deadline)


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--host", default="::1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--ca", required=True)
    p.add_argument("--cert")
    p.add_argument("--key")
    p.add_argument("--server-name", default=None)
    p.add_argument("--send", action="append", default=[])
    p.add_argument("--until", type=int, action="append", default=[])
    p.add_argument("--frames", type=int, default=0)
    p.add_argument("--seconds", type=float, default=10.0)
    args = p.parse_args()

    deadline = time.monotonic() + args.seconds
    family = socket.AF_INET6 if ":" in args.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.settimeout(args.seconds)
    try:
        sock.connect((args.host, args.port))
    except OSError as e:
        print(f"ERROR connect {e}", flush=True)
        return 2

    duid = b"\x00\x03\x00\x01" + os.urandom(6)
    xid = os.urandom(3)
    starttls = bytes([STARTTLS]) + xid + struct.pack("!HH", OPTION_CLIENTID, len(duid)) + duid
    sock.sendall(frame(starttls))
    try:
        answer = read_frame(sock, deadline)
    except (EOFError, OSError) as e:
        print(f"ERROR starttls {e}", flush=True)
        return 2
    print(f"ANSWER {answer[0]} {answer.hex()}", flush=True)
    if answer[0] != STARTTLS or answer[1:4] != xid:
        print("ERROR refused the server did not accept STARTTLS", flush=True)
        return 2

    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=args.ca)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if args.cert:
        ctx.load_cert_chain(args.cert, args.key)
    name = args.server_name or args.host
    try:
        tls = ctx.wrap_socket(sock, server_hostname=name)
    except (ssl.SSLError, OSError) as e:
        print(f"ERROR handshake {e}", flush=True)
        return 2
    print(f"TLS {tls.version()} {tls.cipher()[0]}", flush=True)

    try:
        for h in args.send:
            tls.sendall(frame(bytes.fromhex(h)))
        count = 0
        while time.monotonic() < deadline:
            msg = read_frame(tls, deadline)
            count += 1
            print(f"FRAME {msg[0]} {msg.hex()}", flush=True)
            if msg[0] in args.until or (args.frames and count >= args.frames):
                break
    except EOFError:
        print("CLOSED", flush=True)
    except socket.timeout:
        pass
    except (ssl.SSLError, OSError) as e:
        # TLS 1.3 reports a refused client certificate only at the first read.
        print(f"ERROR session {e}", flush=True)
        return 2
    try:
        tls.close()
    except OSError:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
