#!/usr/bin/env python3
"""A Bulk Leasequery requestor built from dhcpkit 1.0.7's codec, for tests/interop_dhcpkit_cli.rs.

dhcpkit's own requestor CLI (``ipv6-dhcp-test-leasequery``) cannot send a query by remote-id
(its ``remote-id`` subcommand dies with ``'Namespace' object has no attribute
'enterprise_nr'``), so this script sends the RFC 5460 query types by relay-id and by remote-id
with dhcpkit's message classes instead, over one TCP connection to port 547.

Usage: ``dhcpkit_query.py SERVER``. Reads one query a line from stdin, tab-separated:

* ``relay-id<TAB>LINK-ADDRESS<TAB>DUID-HEX``
* ``remote-id<TAB>LINK-ADDRESS<TAB>ENTERPRISE-NUMBER<TAB>REMOTE-ID-HEX``

Each query is a LEASEQUERY whose OPTION_LQ_QUERY also asks for OPTION_LQ_RELAY_DATA (47), with
transaction-id ``0x4c5100 + n`` (n the query's zero-based line number). The script reads every
reply until LEASEQUERY-DONE or a LEASEQUERY-REPLY without client data, parses each with
``Message.parse`` and prints one line per reply message, tab-separated:

``n  class  xid-hex  status  client-duid-hex  addresses  prefixes  relay-ids  remote-ids  unknown``

where ``status`` is the top-level status code, ``addresses`` and ``prefixes`` are the IAADDR and
IAPREFIX values in the OPTION_CLIENT_DATA, ``relay-ids`` (DUID hex) and ``remote-ids``
(``enterprise:hex``) are every OPTION_RELAY_ID and OPTION_REMOTE_ID in the message, wherever they
are nested (in practice inside OPTION_LQ_RELAY_DATA's relay chain), and ``unknown`` lists the codes
of options dhcpkit did not recognise. Lists are comma-separated; an empty field is ``-``.

dhcpkit's ``validate()`` is not called: it refuses RELAY_ID and REMOTE_ID inside LQ_QUERY and
every real LEASEQUERY-DATA and LEASEQUERY-DONE (see dhcpkit_messages.py). Parsing must succeed and
consume each message exactly, or the script exits non-zero.
"""

import socket
import sys
from ipaddress import IPv6Address
from struct import pack, unpack

from dhcpkit.ipv6.duids import DUID, EnterpriseDUID
from dhcpkit.ipv6.extensions.bulk_leasequery import (
    LeasequeryDoneMessage,
    QUERY_BY_RELAY_ID,
    QUERY_BY_REMOTE_ID,
    RelayIdOption,
)
from dhcpkit.ipv6.extensions.leasequery import (
    ClientDataOption,
    LQQueryOption,
    LQRelayDataOption,
    LeasequeryMessage,
    LeasequeryReplyMessage,
    OPTION_LQ_RELAY_DATA,
)
from dhcpkit.ipv6.extensions.prefix_delegation import IAPrefixOption
from dhcpkit.ipv6.extensions.remote_id import RemoteIdOption
from dhcpkit.ipv6.messages import Message, UnknownMessage
from dhcpkit.ipv6.options import (
    ClientIdOption,
    IAAddressOption,
    OptionRequestOption,
    RelayMessageOption,
    StatusCodeOption,
    UnknownOption,
)

PORT = 547
TIMEOUT = 5.0
XID_BASE = 0x4C5100
REQUESTOR = EnterpriseDUID(32473, b"lqd-interop")


def query(n, fields):
    """The LEASEQUERY for one input line."""
    kind, link = fields[0], IPv6Address(fields[1])
    if kind == "relay-id":
        raw = bytes.fromhex(fields[2])
        _, duid = DUID.parse(raw, length=len(raw))
        query_type, key = QUERY_BY_RELAY_ID, RelayIdOption(duid)
    elif kind == "remote-id":
        query_type, key = QUERY_BY_REMOTE_ID, RemoteIdOption(int(fields[2]), bytes.fromhex(fields[3]))
    else:
        raise ValueError("unknown query kind {!r}".format(kind))
    return LeasequeryMessage((XID_BASE + n).to_bytes(3, "big"), [
        ClientIdOption(REQUESTOR),
        LQQueryOption(query_type, link, [key, OptionRequestOption([OPTION_LQ_RELAY_DATA])]),
    ])


def recv_exact(sock, n):
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError("connection closed by the server")
        data += chunk
    return data


def walk(options, found):
    """Collects relay-ids, remote-ids and unknown option codes from options and all nested."""
    for o in options:
        if isinstance(o, UnknownOption):
            found["unknown"].append(str(o.option_type))
        elif isinstance(o, RelayIdOption):
            found["relay_ids"].append(o.duid.save().hex())
        elif isinstance(o, RemoteIdOption):
            found["remote_ids"].append("{}:{}".format(o.enterprise_number, o.remote_id.hex()))
        elif isinstance(o, ClientDataOption):
            walk(o.options, found)
        elif isinstance(o, LQRelayDataOption):
            walk_message(o.relay_message, found)
        elif isinstance(o, RelayMessageOption):
            walk_message(o.relayed_message, found)


def walk_message(message, found):
    if isinstance(message, UnknownMessage):
        found["unknown"].append("message-{}".format(message.message_type))
    else:
        walk(message.options, found)


def describe(n, packet):
    """One output line for a reply message, and whether it ends the query."""
    used, message = Message.parse(packet, length=len(packet))
    if used != len(packet):
        raise ValueError("dhcpkit parsed {} of {} octets".format(used, len(packet)))
    found = {"relay_ids": [], "remote_ids": [], "unknown": []}
    walk_message(message, found)
    client_data = [o for o in getattr(message, "options", []) if isinstance(o, ClientDataOption)]
    if len(client_data) > 1:
        raise ValueError("{} OPTION_CLIENT_DATA in one message".format(len(client_data)))
    status = [o.status_code for o in message.options if isinstance(o, StatusCodeOption)]
    client, addresses, prefixes = "-", [], []
    for cd in client_data:
        for o in cd.options:
            if isinstance(o, ClientIdOption):
                client = o.duid.save().hex()
            elif isinstance(o, IAAddressOption):
                addresses.append(str(o.address))
            elif isinstance(o, IAPrefixOption):
                prefixes.append(str(o.prefix))

    def joined(items):
        return ",".join(items) if items else "-"

    line = "\t".join([
        str(n),
        type(message).__name__,
        message.transaction_id.hex(),
        str(int(status[0])) if status else "-",
        client,
        joined(addresses),
        joined(prefixes),
        joined(found["relay_ids"]),
        joined(found["remote_ids"]),
        joined(found["unknown"]),
    ])
    ended = isinstance(message, LeasequeryDoneMessage) or (
        isinstance(message, LeasequeryReplyMessage) and not client_data)
    return line, ended


def main():
    server = sys.argv[1]
    queries = [line.rstrip("\n").split("\t") for line in sys.stdin if line.strip()]
    sock = socket.create_connection((server, PORT), timeout=TIMEOUT)
    for n, fields in enumerate(queries):
        packet = query(n, fields).save()
        sock.sendall(pack("!H", len(packet)) + packet)
        ended = False
        while not ended:
            length = unpack("!H", recv_exact(sock, 2))[0]
            line, ended = describe(n, recv_exact(sock, length))
            print(line)
    sock.close()


if __name__ == "__main__":
    main()
