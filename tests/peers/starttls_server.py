#!/usr/bin/env python3
"""A small DHCPv6 leasequery server with STARTTLS (RFC 7653), on Python's ssl module (OpenSSL).

The independent TLS stack for tests/requestor_tls.rs and tests/interop_tshark_tls.rs: lq
(rustls) talks to it. Standard library only. Every message is built here by hand from the
RFC layouts (RFC 8415 options, RFC 5007 / 5460 / 7653 leasequery options), not by lqd's codec.

Per connection, on TCP with the 2-octet length framing:

- STARTTLS (23) as the first message: answered with a STARTTLS of the same xid carrying
  OPTION_SERVERID (and the requestor's OPTION_CLIENTID), then the socket is wrapped as a TLS
  server (TLS 1.2 or later; with --client-ca a client certificate is required). With
  --refuse the answer carries OPTION_STATUS_CODE TLSConnectionRefused (15) instead, in a
  LEASEQUERY-REPLY or (--refuse-as starttls) a STARTTLS, and the connection stays in plaintext.
- LEASEQUERY (14): a LEASEQUERY-REPLY with the first binding, LEASEQUERY-DATA for the others,
  LEASEQUERY-DONE with status Success.
- ACTIVELEASEQUERY (22): a LEASEQUERY-REPLY, one LEASEQUERY-DATA per binding (then one with
  CatchUpComplete when the query had OPTION_LQ_START_TIME), then a keepalive (base-time only)
  every second until the requestor goes. With --close-first-active SECS the first Active
  connection is closed SECS after its updates, to make a watcher reconnect.
- A query on a plaintext connection gets a LEASEQUERY-REPLY with NotAllowed unless
  --allow-plain, so a requestor that answers at all has spoken TLS.

Prints "PORT <n>" on stdout once listening; logs one line per event on stderr (connections,
STARTTLS, the TLS version and cipher, the client certificate's subject, handshake failures,
queries and whether they came over TLS).
"""

import argparse
import socket
import ssl
import struct
import sys
import threading
import time

STARTTLS = 23
LEASEQUERY = 14
LEASEQUERY_REPLY = 15
LEASEQUERY_DONE = 16
LEASEQUERY_DATA = 17
ACTIVELEASEQUERY = 22

OPTION_CLIENTID = 1
OPTION_SERVERID = 2
OPTION_IAADDR = 5
OPTION_STATUS_CODE = 13
OPTION_CLIENT_DATA = 45
OPTION_CLT_TIME = 46
OPTION_LQ_BASE_TIME = 100
OPTION_LQ_START_TIME = 101

SUCCESS = 0
NOT_ALLOWED = 10
CATCH_UP_COMPLETE = 13
TLS_CONNECTION_REFUSED = 15

# DUID-LLT of this server.
SERVER_DUID = bytes.fromhex("000100012f077a000000000000beef")
# 2000-01-01T00:00:00Z in Unix seconds: the epoch of server times.
EPOCH_2000 = 946684800

LOCK = threading.Lock()
FIRST_ACTIVE = [True]


def log(line):
    with LOCK:
        sys.stderr.write(line + "\n")
        sys.stderr.flush()


def option(code, data):
    return struct.pack("!HH", code, len(data)) + data


def message(msg_type, xid, options):
    return struct.pack("!I", (msg_type << 24) | (xid & 0xFFFFFF)) + b"".join(options)


def frame(msg):
    return struct.pack("!H", len(msg)) + msg


def status(code, text):
    return option(OPTION_STATUS_CODE, struct.pack("!H", code) + text.encode())


def base_time():
    return option(OPTION_LQ_BASE_TIME, struct.pack("!I", int(time.time()) - EPOCH_2000))


def binding(i):
    """OPTION_CLIENT_DATA of client i: DUID-LL, one IAADDR, CLT_TIME."""
    duid = bytes.fromhex("00030001") + bytes([0x02, 0, 0, 0, 0x10, i & 0xFF])
    address = socket.inet_pton(socket.AF_INET6, "2001:db8:1::%x" % (0x100 + i))
    iaaddr = option(OPTION_IAADDR, address + struct.pack("!II", 3600, 7200))
    clt = option(OPTION_CLT_TIME, struct.pack("!I", 5))
    return option(OPTION_CLIENT_DATA, option(OPTION_CLIENTID, duid) + iaaddr + clt)


def parse_options(data):
    out = []
    i = 0
    while i + 4 <= len(data):
        code, length = struct.unpack_from("!HH", data, i)
        out.append((code, data[i + 4 : i + 4 + length]))
        i += 4 + length
    return out


def linger(conn):
    """Half-closes and reads until the peer closes (at most 2 s), so that the alert just sent
    is not overtaken by a reset for bytes the peer sent meanwhile."""
    try:
        conn.shutdown(socket.SHUT_WR)
        conn.settimeout(2.0)
        while conn.recv(65536):
            pass
    except OSError:
        pass


class Peer:
    """One connection: a socket (plain, later TLS) and a frame reader."""

    def __init__(self, sock):
        self.sock = sock
        self.buf = b""
        self.tls = False

    def recv_frame(self):
        while True:
            if len(self.buf) >= 2:
                (size,) = struct.unpack_from("!H", self.buf)
                if len(self.buf) >= 2 + size:
                    msg = self.buf[2 : 2 + size]
                    self.buf = self.buf[2 + size :]
                    return msg
            chunk = self.sock.recv(65536)
            if not chunk:
                return None
            self.buf += chunk

    def send(self, msg):
        self.sock.sendall(frame(msg))


def serve(conn, addr, args, ctx):
    peer = Peer(conn)
    log("conn from %s" % (addr[0],))
    first = True
    try:
        while True:
            msg = peer.recv_frame()
            if msg is None:
                log("closed by peer tls=%d" % peer.tls)
                return
            if len(msg) < 4:
                log("short message")
                return
            (head,) = struct.unpack_from("!I", msg)
            msg_type, xid = head >> 24, head & 0xFFFFFF
            opts = parse_options(msg[4:])
            client_id = [d for c, d in opts if c == OPTION_CLIENTID]
            echo = [option(OPTION_CLIENTID, client_id[0])] if client_id else []
            if msg_type == STARTTLS:
                log(
                    "starttls xid=%06x first=%d clientid=%s"
                    % (xid, first, client_id[0].hex() if client_id else "-")
                )
                if args.refuse or peer.tls or not first:
                    reply_type = STARTTLS if args.refuse_as == "starttls" else LEASEQUERY_REPLY
                    peer.send(
                        message(
                            reply_type,
                            xid,
                            [option(OPTION_SERVERID, SERVER_DUID)]
                            + echo
                            + [status(TLS_CONNECTION_REFUSED, "TLS is not offered here")],
                        )
                    )
                    log("refused starttls as %d" % reply_type)
                    first = False
                    continue
                peer.send(message(STARTTLS, xid, [option(OPTION_SERVERID, SERVER_DUID)] + echo))
                if peer.buf:
                    log("bytes after STARTTLS before the handshake: %d" % len(peer.buf))
                    return
                conn.settimeout(10.0)
                wrapped = ctx.wrap_socket(conn, server_side=True, do_handshake_on_connect=False)
                try:
                    wrapped.do_handshake()
                except (ssl.SSLError, OSError) as e:
                    log("handshake failed: %s" % (e,))
                    linger(wrapped)
                    wrapped.close()
                    return
                wrapped.settimeout(None)
                conn = wrapped
                peer.sock = wrapped
                peer.tls = True
                cert = wrapped.getpeercert()
                subject = "-"
                if cert:
                    subject = ",".join(
                        "%s=%s" % kv for rdn in cert.get("subject", ()) for kv in rdn
                    )
                log(
                    "tls version=%s cipher=%s client=%s"
                    % (wrapped.version(), wrapped.cipher()[0], subject)
                )
                first = False
                continue
            first = False
            if not peer.tls and not args.allow_plain:
                log("plain query type=%d refused" % msg_type)
                peer.send(
                    message(
                        LEASEQUERY_REPLY,
                        xid,
                        [option(OPTION_SERVERID, SERVER_DUID)]
                        + echo
                        + [status(NOT_ALLOWED, "TLS required")],
                    )
                )
                continue
            if msg_type == LEASEQUERY:
                log("query type=14 xid=%06x tls=%d" % (xid, peer.tls))
                head_opts = [option(OPTION_SERVERID, SERVER_DUID)] + echo + [base_time()]
                peer.send(message(LEASEQUERY_REPLY, xid, head_opts + [binding(0)]))
                for i in range(1, args.bindings):
                    peer.send(message(LEASEQUERY_DATA, xid, [base_time(), binding(i)]))
                peer.send(message(LEASEQUERY_DONE, xid, [status(SUCCESS, "done")]))
            elif msg_type == ACTIVELEASEQUERY:
                start = [d for c, d in opts if c == OPTION_LQ_START_TIME]
                log(
                    "active type=22 xid=%06x tls=%d start=%s"
                    % (xid, peer.tls, struct.unpack("!I", start[0])[0] if start else "-")
                )
                peer.send(
                    message(
                        LEASEQUERY_REPLY,
                        xid,
                        [option(OPTION_SERVERID, SERVER_DUID)] + echo + [base_time()],
                    )
                )
                for i in range(args.bindings):
                    peer.send(message(LEASEQUERY_DATA, xid, [base_time(), binding(i)]))
                if start:
                    peer.send(
                        message(
                            LEASEQUERY_DATA,
                            xid,
                            [base_time(), status(CATCH_UP_COMPLETE, "caught up")],
                        )
                    )
                with LOCK:
                    close_after = args.close_first_active if FIRST_ACTIVE[0] else None
                    FIRST_ACTIVE[0] = False
                began = time.monotonic()
                conn.settimeout(1.0)
                while True:
                    if close_after is not None and time.monotonic() - began >= close_after:
                        log("closing the first active connection")
                        return
                    try:
                        more = conn.recv(65536)
                        if not more:
                            log("closed by peer tls=%d" % peer.tls)
                            return
                    except (socket.timeout, TimeoutError):
                        pass
                    peer.send(message(LEASEQUERY_DATA, xid, [base_time()]))
            else:
                log("unexpected message type %d" % msg_type)
                return
    except (ssl.SSLError, OSError) as e:
        log("connection error tls=%d: %s" % (peer.tls, e))
    finally:
        try:
            conn.close()
        except OSError:
            pass


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--host", default="::1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--cert", required=True, help="server certificate chain, PEM")
    p.add_argument("--key", required=True, help="server key, PEM")
    p.add_argument("--client-ca", help="require a client certificate signed by this CA")
    p.add_argument("--refuse", action="store_true", help="refuse STARTTLS")
    p.add_argument("--refuse-as", choices=["reply", "starttls"], default="reply")
    p.add_argument("--allow-plain", action="store_true", help="answer queries without TLS")
    p.add_argument("--bindings", type=int, default=1)
    p.add_argument("--max-version", choices=["1.2", "1.3"], default="1.3")
    p.add_argument("--close-first-active", type=float, default=None, metavar="SECS")
    args = p.parse_args()

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if args.max_version == "1.2":
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(args.cert, args.key)
    if args.client_ca:
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(args.client_ca)

    family = socket.AF_INET6 if ":" in args.host else socket.AF_INET
    srv = socket.socket(family, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((args.host, args.port))
    srv.listen(16)
    print("PORT %d" % srv.getsockname()[1], flush=True)
    while True:
        conn, addr = srv.accept()
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        threading.Thread(target=serve, args=(conn, addr, args, ctx), daemon=True).start()


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        pass
