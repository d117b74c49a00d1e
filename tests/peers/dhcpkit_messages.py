#!/usr/bin/env python3
"""Leasequery messages encoded and decoded by dhcpkit 1.0.7, for tests/interop_dhcpkit.rs.

dhcpkit is an independent Python implementation of DHCPv6 with RFC 5007 (Leasequery) and
RFC 5460 (Bulk Leasequery) support. This script lets the Rust test use it as an oracle in both
directions:

``build`` (the default)
    Builds a fixed set of messages with dhcpkit's own classes and prints one line per message,
    tab-separated: ``name``, the hex of dhcpkit's ``save()`` bytes, and the result of dhcpkit's
    own ``validate()`` (``valid`` or ``invalid: <reason>``). The Rust test hard-wires the values
    below (the same constants) and checks that our codec decodes every field to them.

``parse``
    Reads lines ``name<TAB>hex`` from stdin (messages made by our encoder), parses each with
    dhcpkit's ``Message.parse`` and prints ``name``, the hex of dhcpkit's re-``save()``, a
    summary of what dhcpkit decoded (classes and key field values, see ``describe``) and the
    ``validate()`` result. A message dhcpkit cannot parse prints ``name<TAB>ERROR<TAB>reason``.

dhcpkit quirks met on the way (version 1.0.7):

* ``LQQueryOption`` may only contain IAADDR, CLIENTID and ORO, so ``validate()`` refuses the
  RFC 5460 query keys RELAY_ID and REMOTE_ID inside it ("LQQueryOption cannot contain
  RelayIdOption"). Its ``save()`` and ``load_from()`` do not validate, so those queries are still
  built from dhcpkit's own ``RelayIdOption`` / ``RemoteIdOption`` objects and saved; only
  ``validate()`` reports them as invalid.
* ``LeasequeryDataMessage`` and ``LeasequeryDoneMessage`` register no allowed options at all, so
  ``validate()`` refuses every real LEASEQUERY-DATA (CLIENT_DATA) and LEASEQUERY-DONE
  (STATUS_CODE). dhcpkit's own server sends them without validating.
* The RFC 7653 options (LQ_BASE_TIME 100, LQ_START_TIME 101, LQ_END_TIME 102) and message types
  22/23 are unknown to dhcpkit: they stay ``UnknownOption`` / ``UnknownMessage`` blobs, which it
  re-saves byte for byte.
"""

import sys
from ipaddress import IPv6Address, IPv6Network
from struct import pack

from dhcpkit.ipv6.duids import EnterpriseDUID, LinkLayerDUID, LinkLayerTimeDUID
from dhcpkit.ipv6.extensions.bulk_leasequery import (
    LeasequeryDataMessage,
    LeasequeryDoneMessage,
    QUERY_BY_LINK_ADDRESS,
    QUERY_BY_RELAY_ID,
    QUERY_BY_REMOTE_ID,
    RelayIdOption,
    STATUS_QUERY_TERMINATED,
)
from dhcpkit.ipv6.extensions.leasequery import (
    CLTTimeOption,
    ClientDataOption,
    LQClientLink,
    LQQueryOption,
    LQRelayDataOption,
    LeasequeryMessage,
    LeasequeryReplyMessage,
    QUERY_BY_ADDRESS,
    QUERY_BY_CLIENT_ID,
    STATUS_NOT_CONFIGURED,
)
from dhcpkit.ipv6.extensions.prefix_delegation import IAPrefixOption
from dhcpkit.ipv6.extensions.remote_id import RemoteIdOption
from dhcpkit.ipv6.messages import Message, RelayForwardMessage, UnknownMessage
from dhcpkit.ipv6.options import (
    ClientIdOption,
    IAAddressOption,
    InterfaceIdOption,
    OptionRequestOption,
    RelayMessageOption,
    ServerIdOption,
    StatusCodeOption,
    UnknownOption,
)

# The constants the Rust test hard-wires too (tests/interop_dhcpkit.rs). Keep them in sync.
ETHERNET = 1
REQUESTOR_DUID = LinkLayerDUID(ETHERNET, bytes.fromhex("001122334455"))  # 0003 0001 001122334455
CLIENT_DUID = LinkLayerDUID(ETHERNET, bytes.fromhex("66778899aabb"))  # 0003 0001 66778899aabb
SERVER_DUID = LinkLayerTimeDUID(ETHERNET, 0x2F077A00, bytes.fromhex("00000000cafe"))
RELAY_DUID = EnterpriseDUID(9, bytes.fromhex("0102030405"))  # 0002 00000009 0102030405
REMOTE_ENTERPRISE = 4491
REMOTE_ID = b"modem-7"
LINK = IPv6Address("2001:db8:1::1")
LINK2 = IPv6Address("2001:db8:2::1")
ADDRESS = IPv6Address("2001:db8:1::100")
RELAY_PEER = IPv6Address("2001:db8:1::2")
CLIENT_LL = IPv6Address("fe80::6677:88ff:fe99:aabb")
PREFIX = IPv6Network("2001:db8:ff00::/56")
PREFERRED = 3600
VALID = 7200
CLT_TIME = 60
BASE_TIME = 789005400  # 2025-01-01T00:10:00Z in seconds since 2000 (RFC 7653 server time)
INTERFACE_ID = b"ge-0/0/1"
OPTION_LQ_RELAY_DATA = 47
OPTION_LQ_BASE_TIME = 100


def xid(n):
    """A 24-bit transaction id as dhcpkit wants it: three bytes."""
    return n.to_bytes(3, "big")


def lq_by_address():
    return LeasequeryMessage(xid(0x000001), [
        ClientIdOption(REQUESTOR_DUID),
        LQQueryOption(QUERY_BY_ADDRESS, IPv6Address("::"), [
            IAAddressOption(ADDRESS, 0, 0),
            OptionRequestOption([OPTION_LQ_RELAY_DATA]),
        ]),
    ])


def messages():
    """The (name, message) pairs of build mode, in output order."""
    relay_forw = RelayForwardMessage(0, LINK, CLIENT_LL, [
        InterfaceIdOption(INTERFACE_ID),
        RemoteIdOption(REMOTE_ENTERPRISE, REMOTE_ID),
    ])
    return [
        ("lq_by_address", lq_by_address()),
        ("lq_by_client_id", LeasequeryMessage(xid(0x000002), [
            ClientIdOption(REQUESTOR_DUID),
            OptionRequestOption([OPTION_LQ_BASE_TIME]),
            LQQueryOption(QUERY_BY_CLIENT_ID, LINK, [ClientIdOption(CLIENT_DUID)]),
        ])),
        ("lq_by_link_address", LeasequeryMessage(xid(0x000003), [
            ClientIdOption(REQUESTOR_DUID),
            ServerIdOption(SERVER_DUID),
            LQQueryOption(QUERY_BY_LINK_ADDRESS, LINK2, []),
        ])),
        # Refused by dhcpkit's validate() (see the module doc), but built from its classes.
        ("lq_by_relay_id", LeasequeryMessage(xid(0x000004), [
            ClientIdOption(REQUESTOR_DUID),
            LQQueryOption(QUERY_BY_RELAY_ID, IPv6Address("::"), [RelayIdOption(RELAY_DUID)]),
        ])),
        ("lq_by_remote_id", LeasequeryMessage(xid(0x000005), [
            ClientIdOption(REQUESTOR_DUID),
            LQQueryOption(QUERY_BY_REMOTE_ID, IPv6Address("::"), [
                RemoteIdOption(REMOTE_ENTERPRISE, REMOTE_ID),
            ]),
        ])),
        ("reply_client_data", LeasequeryReplyMessage(xid(0x000006), [
            ServerIdOption(SERVER_DUID),
            ClientIdOption(REQUESTOR_DUID),
            UnknownOption(OPTION_LQ_BASE_TIME, pack("!I", BASE_TIME)),
            ClientDataOption([
                ClientIdOption(CLIENT_DUID),
                IAAddressOption(ADDRESS, PREFERRED, VALID),
                IAPrefixOption(PREFIX, PREFERRED, VALID),
                CLTTimeOption(CLT_TIME),
                LQRelayDataOption(RELAY_PEER, relay_forw),
            ]),
        ])),
        ("reply_client_link", LeasequeryReplyMessage(xid(0x000007), [
            ServerIdOption(SERVER_DUID),
            ClientIdOption(REQUESTOR_DUID),
            LQClientLink([LINK, LINK2]),
        ])),
        ("reply_status", LeasequeryReplyMessage(xid(0x000008), [
            ServerIdOption(SERVER_DUID),
            ClientIdOption(REQUESTOR_DUID),
            StatusCodeOption(STATUS_NOT_CONFIGURED, "no such link"),
        ])),
        ("data", LeasequeryDataMessage(xid(0x000009), [
            ClientDataOption([
                ClientIdOption(CLIENT_DUID),
                IAAddressOption(ADDRESS, PREFERRED, VALID),
                CLTTimeOption(CLT_TIME),
            ]),
        ])),
        ("done", LeasequeryDoneMessage(xid(0x00000A), [
            StatusCodeOption(STATUS_QUERY_TERMINATED, "shutting down"),
        ])),
        ("relay_forw_lq", RelayForwardMessage(1, LINK, RELAY_PEER, [
            InterfaceIdOption(INTERFACE_ID),
            RelayMessageOption(lq_by_address()),
        ])),
    ]


def validity(element):
    """dhcpkit's own opinion of an element: 'valid' or 'invalid: <reason>'."""
    try:
        element.validate()
    except ValueError as e:
        return "invalid: {}".format(e)
    return "valid"


def hexs(b):
    return bytes(b).hex()


def describe(e):
    """A compact, stable text of what dhcpkit decoded: class names, key values, nesting."""
    name = type(e).__name__
    if isinstance(e, RelayForwardMessage) or type(e).__name__ == "RelayReplyMessage":
        head = "{}({},{},{})".format(name, e.hop_count, e.link_address, e.peer_address)
        return head + children(e.options)
    if isinstance(e, UnknownMessage):
        return "{}({},{})".format(name, e.message_type, hexs(e.message_data))
    if isinstance(e, Message):
        return "{}({})".format(name, hexs(e.transaction_id)) + children(e.options)
    if isinstance(e, (ClientIdOption, ServerIdOption, RelayIdOption)):
        return "{}({})".format(name, hexs(e.duid.save()))
    if isinstance(e, LQQueryOption):
        return "{}({},{})".format(name, e.query_type, e.link_address) + children(e.options)
    if isinstance(e, ClientDataOption):
        return name + children(e.options)
    if isinstance(e, IAAddressOption):
        return "{}({},{},{})".format(name, e.address, e.preferred_lifetime,
                                     e.valid_lifetime) + children(e.options)
    if isinstance(e, IAPrefixOption):
        return "{}({},{},{})".format(name, e.prefix, e.preferred_lifetime,
                                     e.valid_lifetime) + children(e.options)
    if isinstance(e, OptionRequestOption):
        return "{}({})".format(name, ",".join(str(c) for c in e.requested_options))
    if isinstance(e, StatusCodeOption):
        return "{}({},{})".format(name, e.status_code, e.status_message)
    if isinstance(e, CLTTimeOption):
        return "{}({})".format(name, e.clt_time)
    if isinstance(e, LQRelayDataOption):
        return "{}({})".format(name, e.peer_address) + children([e.relay_message])
    if isinstance(e, LQClientLink):
        return "{}({})".format(name, ",".join(str(a) for a in e.link_addresses))
    if isinstance(e, RemoteIdOption):
        return "{}({},{})".format(name, e.enterprise_number, hexs(e.remote_id))
    if isinstance(e, InterfaceIdOption):
        return "{}({})".format(name, hexs(e.interface_id))
    if isinstance(e, RelayMessageOption):
        return name + children([e.relayed_message])
    if isinstance(e, UnknownOption):
        return "{}({},{})".format(name, e.option_type, hexs(e.option_data))
    return name


def children(elements):
    return "[" + ";".join(describe(c) for c in elements) + "]"


def build():
    for name, msg in messages():
        print("{}\t{}\t{}".format(name, hexs(msg.save()), validity(msg)))


def parse():
    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        name, hex_bytes = line.split("\t")
        data = bytes.fromhex(hex_bytes)
        try:
            used, msg = Message.parse(data)
            if used != len(data):
                raise ValueError("parsed {} of {} octets".format(used, len(data)))
            print("{}\t{}\t{}\t{}".format(name, hexs(msg.save()), describe(msg), validity(msg)))
        except Exception as e:  # noqa: BLE001 - any failure is reported to the Rust test
            print("{}\tERROR\t{}: {}".format(name, type(e).__name__, e))


if __name__ == "__main__":
    mode = sys.argv[1] if len(sys.argv) > 1 else "build"
    if mode == "build":
        build()
    elif mode == "parse":
        parse()
    else:
        sys.exit("usage: dhcpkit_messages.py [build|parse]")
