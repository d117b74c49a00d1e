#!/usr/bin/env python3
"""Gives leases out from a dhcpkit server by acting as a relay for made-up clients.

Used by tests/common/dhcpkit_server.rs. dhcpkit's Leasequery store only knows the leases the server
handed out itself (it records them from its own REPLY messages), so the leases the tests query
have to be obtained first: for each client this script sends one SOLICIT with Rapid Commit,
wrapped in a RELAY-FORW as a relay agent on the client's link would, and reads the RELAY-REPL,
all with dhcpkit 1.0.7's own codec.

Usage: ``dhcpkit_populate.py SERVER RELAY-ADDRESS``. The script binds UDP port 547 on
RELAY-ADDRESS (the server sends RELAY-REPL to port 547 of the relay) and sends to port 547 of
SERVER. It reads one client a line from stdin, tab-separated:

``DUID-HEX  LINK-ADDRESS  IAS  REMOTE-ID``

* ``IAS``: ``na``, ``pd`` or ``na,pd``: the IAs the SOLICIT asks for (IAID 1 for each);
* ``REMOTE-ID``: ``ENTERPRISE:HEX`` for an OPTION_REMOTE_ID in the RELAY-FORW, or ``-``.

The RELAY-FORW has hop-count 0, the given link-address, a link-local peer-address made from the
line number, and an OPTION_INTERFACE_ID. For each client it prints one line, tab-separated:

``DUID-HEX  LINK-ADDRESS  MESSAGE-CLASS  ADDRESSES  PREFIXES``

where ``ADDRESSES`` lists ``address/preferred/valid`` and ``PREFIXES`` ``prefix/len/preferred/valid``
(comma-separated, ``-`` when none) from the IA_NA and IA_PD of the relayed REPLY, leaving out IAs
with a non-success status. Exits non-zero if a reply is missing, is not a REPLY, or does not
parse.
"""

import socket
import sys
from ipaddress import IPv6Address

from dhcpkit.ipv6.duids import DUID
from dhcpkit.ipv6.extensions.prefix_delegation import IAPDOption, IAPrefixOption
from dhcpkit.ipv6.extensions.remote_id import RemoteIdOption
from dhcpkit.ipv6.messages import Message, RelayForwardMessage, RelayReplyMessage, ReplyMessage, SolicitMessage
from dhcpkit.ipv6.options import (
    ClientIdOption,
    ElapsedTimeOption,
    IAAddressOption,
    IANAOption,
    InterfaceIdOption,
    RapidCommitOption,
    RelayMessageOption,
    StatusCodeOption,
    STATUS_SUCCESS,
)

PORT = 547
TIMEOUT = 5.0
IAID = b"\x00\x00\x00\x01"


def accepted(ia):
    status = ia.get_option_of_type(StatusCodeOption)
    return status is None or status.status_code == STATUS_SUCCESS


def solicit(n, fields):
    """The RELAY-FORW for the n-th input line."""
    duid_bytes = bytes.fromhex(fields[0])
    _, duid = DUID.parse(duid_bytes, length=len(duid_bytes))
    link = IPv6Address(fields[1])
    ias = set(fields[2].split(","))
    options = [ClientIdOption(duid), ElapsedTimeOption(0), RapidCommitOption()]
    if "na" in ias:
        options.append(IANAOption(IAID))
    if "pd" in ias:
        options.append(IAPDOption(IAID))
    xid = (0x5E0000 + n).to_bytes(3, "big")
    relay_options = [InterfaceIdOption(b"link-" + fields[1].encode())]
    if len(fields) > 3 and fields[3] != "-":
        enterprise, remote = fields[3].split(":", 1)
        relay_options.append(RemoteIdOption(int(enterprise), bytes.fromhex(remote)))
    relay_options.append(RelayMessageOption(SolicitMessage(xid, options)))
    peer = IPv6Address("fe80::c:0") + n + 1
    return RelayForwardMessage(hop_count=0, link_address=link, peer_address=peer, options=relay_options)


def main():
    server, relay = sys.argv[1], sys.argv[2]
    sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    sock.bind((relay, PORT))
    sock.settimeout(TIMEOUT)
    for n, line in enumerate(sys.stdin):
        fields = line.rstrip("\n").split("\t")
        if not fields[0]:
            continue
        forward = solicit(n, fields)
        sock.sendto(forward.save(), (server, PORT))
        data, _ = sock.recvfrom(65535)
        length, relay_reply = Message.parse(data)
        if length != len(data) or not isinstance(relay_reply, RelayReplyMessage):
            sys.exit("line {}: not a RELAY-REPL: {!r}".format(n, relay_reply))
        reply = relay_reply.relayed_message
        if not isinstance(reply, ReplyMessage):
            sys.exit("line {}: the server did not commit (Rapid Commit refused?): {}".format(n, reply))
        addresses, prefixes = [], []
        for ia in reply.get_options_of_type(IANAOption):
            if accepted(ia):
                for a in ia.get_options_of_type(IAAddressOption):
                    addresses.append("{}/{}/{}".format(a.address, a.preferred_lifetime, a.valid_lifetime))
        for ia in reply.get_options_of_type(IAPDOption):
            if accepted(ia):
                for p in ia.get_options_of_type(IAPrefixOption):
                    prefixes.append("{}/{}/{}".format(p.prefix, p.preferred_lifetime, p.valid_lifetime))
        print("\t".join([
            fields[0],
            fields[1],
            type(reply).__name__,
            ",".join(addresses) or "-",
            ",".join(prefixes) or "-",
        ]), flush=True)


if __name__ == "__main__":
    main()
