"""CPU cost of one replayed UDP answer, against a bare recvfrom/sendto loop in Python.

Run by hand, never in CI:  .venv/bin/python bench/replay_cost.py  (pin it: taskset -c 0 ...)

Starts the real service in this process on a loopback port, with one line and one zone,
makes a query replayable (asked three times), then fills the listening socket with 1,000 copies
of that query and times one ``DNSDatagramPort.doRead`` draining them: receive, replay lookup,
send.  The same 1,000 datagrams are then drained by the bare loop ``recvfrom`` + ``sendto`` of
the same answer bytes on the same socket.  Prints the median per-packet time of 20 rounds of
each, for each of the port's read loops: batched (``smartdns._udp``: recvmmsg/sendmmsg, the
lookup in C), where it is built, and a datagram per call (Python).  The bare loop is the floor
of the Python loop; the batched one goes below it, since it makes two system calls per 64
datagrams instead of two per datagram.
"""
from __future__ import annotations

import os
import socket
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import dns.message  # noqa: E402
from twisted.internet import reactor  # noqa: E402

from smartdns import server  # noqa: E402
from smartdns.service import SmartDNSService, load  # noqa: E402

PACKETS = 1000
ROUNDS = 20
BUFFER_BYTES = 16 << 20

CONFIG = """
[server]
listen = ["127.0.0.1:0"]
control_socket = ""
[zones]
directory = "zones"
[lines]
lo = ["127.0.0.1/32"]
[forward]
upstreams = []
"""
ZONE = "$TTL 3600\n@ SOA ns h 1 2 3 4 60\n@ NS ns\nns A 192.0.2.1\nwww A 192.0.2.2\n"
OVERLAY = "www A 10.0.0.2\n"


def median(values: list[float]) -> float:
    return sorted(values)[len(values) // 2]


def main() -> None:
    base = tempfile.mkdtemp(prefix="replay-cost-")
    os.makedirs(os.path.join(base, "zones", "lo"))
    for rel, text in (("smartdns.toml", CONFIG), ("zones/bench.test.zone", ZONE), ("zones/lo/bench.test.zone", OVERLAY)):
        with open(os.path.join(base, rel), "w", encoding="utf-8") as handle:
            handle.write(text)
    config, snapshot = load(os.path.join(base, "smartdns.toml"))
    service = SmartDNSService(config, snapshot, reactor)
    service.startService()
    port = service.ports[0]
    port.stopReading()                      # doRead is driven by hand below
    port.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, BUFFER_BYTES)
    dest = port.socket.getsockname()
    client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    client.bind(("127.0.0.1", 0))
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, BUFFER_BYTES)
    client.setblocking(False)
    query = dns.message.make_query("www.bench.test", "A").to_wire()

    def drain() -> None:
        try:
            while True:
                client.recv(4096)
        except BlockingIOError:
            pass

    for _ in range(3):                      # full path, memo, then replay
        client.sendto(query, dest)
        port.doRead()
    drain()
    (tail, _, _), = service.handler.replay.values()

    loops = [("batched", True)] if server._udp is not None else []
    loops.append(("per call", False))
    replayed = {}
    for label, batched in loops:
        port.batched = batched
        times = []
        for _ in range(ROUNDS):
            for _ in range(PACKETS):
                client.sendto(query, dest)
            start = time.perf_counter()
            port.doRead()
            times.append((time.perf_counter() - start) / PACKETS * 1e6)
            drain()
        replayed[label] = median(times)
    recv, send = port.socket.recvfrom, port.socket.sendto
    bare = []
    for _ in range(ROUNDS):
        for _ in range(PACKETS):
            client.sendto(query, dest)
        start = time.perf_counter()
        for _ in range(PACKETS):
            data, addr = recv(8192)
            send(data[:2] + tail, addr)
        bare.append((time.perf_counter() - start) / PACKETS * 1e6)
        drain()
    for label, value in replayed.items():
        print(f"replayed answer (DNSDatagramPort.doRead, {label}):{' ' * (9 - len(label))}{value:.2f} us per packet")
    if server._udp is None:
        print("(smartdns._udp is not built: no batched loop to measure)")
    print(f"bare recvfrom + sendto loop in Python:{' ' * 13}{median(bare):.2f} us per packet")
    print(f"answers counted by the handler: {service.handler.stats.queries}")


if __name__ == "__main__":
    main()
