#!/usr/bin/env python3
"""A scripted DHCPv6 client (and relay agent) for tests/kea_e2e.rs, built on dhcpkit 1.0.7's
codec, that drives a real Kea DHCPv6 server.

It runs inside the client's network namespace and takes one JSON command per line on stdin,
answering each with one JSON line on stdout:

``{"op": "bind", "name": N, "na": true, "pd": true, "relay": null | RELAY}``
    SOLICIT, then REQUEST for what the ADVERTISE offered (an IA_NA and/or an IA_PD).
``{"op": "renew", "name": N}``
    RENEW of every lease the client holds.
``{"op": "release", "name": N}``
    RELEASE of every lease the client holds.

A RELAY is ``{"link": A, "relay_id": HEX, "remote_id": [ENTERPRISE, HEX], "interface_id":
HEX}``: the client's messages are then wrapped in a RELAY-FORWARD (hop count 0, that
link-address, the client's link-local address as peer, and the relay-id (53), remote-id (37)
and interface-id (18) options), sent from port 547 to the server's unicast address, as a relay
agent does. RELAY may also be a list of such relays, the outer relay first, each but the
outermost with the ``"address"`` it sends from, which is the peer-address of the relay outside
it. The chain is then nested as relays nest it (hop counts 0 inside, counting up
outwards), and the server's RELAY-REPLY is unwrapped layer by layer. Without one, the client sends from its link-local address, port 546, to
ff02::1:2 on the interface, as a directly attached client does.

Each answer: ``{"ok": true, "name": N, "duid": HEX, "link_local": A, "sent": T, "leases":
[L...]}`` (``link_local``: the client's address, the innermost relay's peer-address) where
``sent`` is the Unix time (float) just before the message that makes the server write the
lease (REQUEST, RENEW, RELEASE) went out, and each L is ``{"type": "address"|"prefix",
"address": A, "prefix_len": P, "valid": SECONDS}`` (empty after a release). A failure answers
``{"ok": false, "error": TEXT}`` and the script goes on.

Usage: kea_client.py INTERFACE SERVER_UNICAST RELAY_SOURCE
"""

import json
import os
import select
import socket
import sys
import time
from ipaddress import IPv6Address, IPv6Network
from struct import pack

from dhcpkit.ipv6.duids import LinkLayerDUID
from dhcpkit.ipv6.extensions.bulk_leasequery import RelayIdOption
from dhcpkit.ipv6.extensions.prefix_delegation import IAPDOption, IAPrefixOption
from dhcpkit.ipv6.extensions.remote_id import RemoteIdOption
from dhcpkit.ipv6.messages import (
    AdvertiseMessage,
    Message,
    RelayForwardMessage,
    RelayReplyMessage,
    ReleaseMessage,
    RenewMessage,
    ReplyMessage,
    RequestMessage,
    SolicitMessage,
)
from dhcpkit.ipv6.options import (
    ClientIdOption,
    ElapsedTimeOption,
    IAAddressOption,
    IANAOption,
    InterfaceIdOption,
    RelayMessageOption,
    ServerIdOption,
    StatusCodeOption,
)
from dhcpkit.ipv6.duids import DUID

TIMEOUT = 1.0
TRIES = 4


class Client:
    def __init__(self, name, index, relay):
        self.name = name
        self.mac = bytes([0x02, 0x6b, 0x65, 0x61, (index >> 8) & 0xFF, index & 0xFF])
        self.duid = LinkLayerDUID(hardware_type=1, link_layer_address=self.mac)
        self.duid_bytes = self.duid.save()
        self.relay = relay
        # The EUI-64 link-local address a client with this MAC would use.
        eui = bytes([self.mac[0] ^ 0x02]) + self.mac[1:3] + b"\xff\xfe" + self.mac[3:]
        self.link_local = IPv6Address(b"\xfe\x80" + b"\x00" * 6 + eui)
        self.iaid_na = pack("!I", 0x10000 + index)
        self.iaid_pd = pack("!I", 0x20000 + index)
        self.server_id = None
        self.na = []  # IAAddressOption
        self.pd = []  # IAPrefixOption

    def leases(self):
        out = []
        for a in self.na:
            out.append({"type": "address", "address": str(a.address), "prefix_len": 128,
                        "valid": a.valid_lifetime})
        for p in self.pd:
            out.append({"type": "prefix", "address": str(p.prefix.network_address),
                        "prefix_len": p.prefix.prefixlen, "valid": p.valid_lifetime})
        return out


class Lab:
    def __init__(self, interface, server, relay_source):
        self.ifindex = socket.if_nametoindex(interface)
        self.server = server
        # A directly attached client: link-local, port 546, to the All_DHCP_Relay_Agents_and_Servers
        # multicast group on the interface.
        self.direct = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        self.direct.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.direct.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, self.ifindex)
        self.direct.bind(("::", 546, 0, 0))
        # A relay agent: its global address, port 547, unicast to the server.
        self.relay = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        self.relay.bind((relay_source, 547))
        self.clients = {}

    def exchange(self, client, message, expect):
        """Sends `message` for `client` and returns the server's answer of type `expect`."""
        xid = message.transaction_id
        for attempt in range(TRIES):
            if client.relay is None:
                sock = self.direct
                sock.sendto(message.save(), ("ff02::1:2", 547, 0, self.ifindex))
            else:
                hops = client.relay if isinstance(client.relay, list) else [client.relay]
                forward = message
                peer = client.link_local
                for hop_count, r in enumerate(reversed(hops)):
                    options = [
                        InterfaceIdOption(bytes.fromhex(r["interface_id"])),
                        RemoteIdOption(r["remote_id"][0], bytes.fromhex(r["remote_id"][1])),
                        RelayIdOption(DUID.parse(bytes.fromhex(r["relay_id"]),
                                                 length=len(r["relay_id"]) // 2)[1]),
                        RelayMessageOption(forward),
                    ]
                    forward = RelayForwardMessage(hop_count=hop_count,
                                                  link_address=IPv6Address(r["link"]),
                                                  peer_address=peer, options=options)
                    peer = IPv6Address(r.get("address", "::"))
                sock = self.relay
                sock.sendto(forward.save(), (self.server, 547))
            deadline = time.monotonic() + TIMEOUT * (attempt + 1)
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                ready, _, _ = select.select([sock], [], [], left)
                if not ready:
                    break
                data, _ = sock.recvfrom(65535)
                try:
                    _, answer = Message.parse(data, length=len(data))
                except Exception:  # noqa: BLE001 (a stray datagram is skipped, not fatal)
                    continue
                while isinstance(answer, RelayReplyMessage):
                    inner = answer.get_option_of_type(RelayMessageOption)
                    if inner is None:
                        break
                    answer = inner.relayed_message
                if isinstance(answer, expect) and answer.transaction_id == xid:
                    return answer
        raise RuntimeError("no {} from the server after {} tries".format(expect.__name__, TRIES))

    def ias(self, client, na, pd, hint):
        options = []
        if na:
            options.append(IANAOption(client.iaid_na, options=list(client.na) if hint else []))
        if pd:
            options.append(IAPDOption(client.iaid_pd, options=list(client.pd) if hint else []))
        return options

    def take(self, client, reply):
        """Keeps the leases of a REPLY; refuses one with an error status."""
        status = reply.get_option_of_type(StatusCodeOption)
        if status is not None and status.status_code != 0:
            raise RuntimeError("status {}: {}".format(status.status_code, status.status_message))
        na = []
        pd = []
        for ia in reply.get_options_of_type(IANAOption):
            s = ia.get_option_of_type(StatusCodeOption)
            if s is not None and s.status_code != 0:
                raise RuntimeError("IA_NA status {}: {}".format(s.status_code, s.status_message))
            na += [a for a in ia.get_options_of_type(IAAddressOption) if a.valid_lifetime > 0]
        for ia in reply.get_options_of_type(IAPDOption):
            s = ia.get_option_of_type(StatusCodeOption)
            if s is not None and s.status_code != 0:
                raise RuntimeError("IA_PD status {}: {}".format(s.status_code, s.status_message))
            pd += [p for p in ia.get_options_of_type(IAPrefixOption) if p.valid_lifetime > 0]
        return na, pd

    def bind(self, cmd):
        name = cmd["name"]
        client = Client(name, len(self.clients) + 1, cmd.get("relay"))
        na, pd = cmd.get("na", True), cmd.get("pd", False)
        solicit = SolicitMessage(os.urandom(3), [
            ClientIdOption(client.duid), ElapsedTimeOption(0), *self.ias(client, na, pd, False)])
        advertise = self.exchange(client, solicit, AdvertiseMessage)
        server_id = advertise.get_option_of_type(ServerIdOption)
        if server_id is None:
            raise RuntimeError("ADVERTISE without a server id")
        client.server_id = server_id.duid
        client.na, client.pd = self.take(client, advertise)
        request = RequestMessage(os.urandom(3), [
            ClientIdOption(client.duid), ServerIdOption(client.server_id), ElapsedTimeOption(0),
            *self.ias(client, na, pd, True)])
        sent = time.time()
        reply = self.exchange(client, request, ReplyMessage)
        client.na, client.pd = self.take(client, reply)
        self.clients[name] = client
        return client, sent

    def held(self, client, cls):
        """A message of class `cls` to the server about every lease the client holds."""
        return cls(os.urandom(3), [
            ClientIdOption(client.duid), ServerIdOption(client.server_id), ElapsedTimeOption(0),
            *self.ias(client, bool(client.na), bool(client.pd), True)])

    def renew(self, cmd):
        client = self.clients[cmd["name"]]
        renew = self.held(client, RenewMessage)
        sent = time.time()
        reply = self.exchange(client, renew, ReplyMessage)
        client.na, client.pd = self.take(client, reply)
        return client, sent

    def release(self, cmd):
        client = self.clients[cmd["name"]]
        release = self.held(client, ReleaseMessage)
        sent = time.time()
        reply = self.exchange(client, release, ReplyMessage)
        status = reply.get_option_of_type(StatusCodeOption)
        if status is not None and status.status_code != 0:
            raise RuntimeError("release: status {}: {}".format(status.status_code,
                                                              status.status_message))
        client.na, client.pd = [], []
        return client, sent


def main():
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    lab = Lab(sys.argv[1], sys.argv[2], sys.argv[3])
    ops = {"bind": lab.bind, "renew": lab.renew, "release": lab.release}
    print(json.dumps({"ok": True, "ready": True}), flush=True)
    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        try:
            cmd = json.loads(line)
            client, sent = ops[cmd["op"]](cmd)
            answer = {"ok": True, "name": client.name, "duid": client.duid_bytes.hex(),
                      "link_local": str(client.link_local), "sent": sent,
                      "leases": client.leases()}
        except Exception as e:  # noqa: BLE001 (every failure is reported to the test)
            answer = {"ok": False, "error": "{}: {}".format(type(e).__name__, e)}
        print(json.dumps(answer), flush=True)


if __name__ == "__main__":
    main()
