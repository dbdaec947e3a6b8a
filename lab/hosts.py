#!/usr/bin/env python3
"""The programs the lab runs inside its network namespaces: servers and traffic clients.

`lab.py` starts them with `ip netns exec NS python3 hosts.py ...`. Standard library only.
Servers run until killed. Every client prints one JSON object on stdout when it is done:
the flows it made (5-tuples with the local port it got), what it saw, and how it ended, so
the traffic generator can write exact labels. Clients never retry by themselves beyond what
the kernel does, and every socket operation has a timeout: a client cannot hang the lab.

This file deliberately holds no topology and no expectations: those are lab.py's.
"""

import argparse
import http.client
import http.server
import json
import os
import random
import socket
import socketserver
import ssl
import struct
import sys
import threading
import time

# --------------------------------------------------------------------------------------------
# Servers
# --------------------------------------------------------------------------------------------


class LabHandler(http.server.BaseHTTPRequestHandler):
    """`GET /` a small page, `GET /bytes/N` N bytes, `POST /upload` counts the body."""

    protocol_version = "HTTP/1.1"
    server_version = "lab"

    def log_message(self, *args):  # quiet: the lab reads the clients' reports, not logs
        pass

    def do_GET(self):
        if self.path.startswith("/bytes/"):
            try:
                n = min(int(self.path[len("/bytes/"):]), 64 * 1024 * 1024)
            except ValueError:
                self.send_error(400)
                return
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(n))
            self.end_headers()
            chunk = b"x" * 65536
            left = n
            try:
                while left > 0:
                    self.wfile.write(chunk[: min(left, len(chunk))])
                    left -= min(left, len(chunk))
            except OSError:
                return
            return
        body = b"<html><body>lab page</body></html>\n"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        n = int(self.headers.get("Content-Length", "0"))
        got = 0
        while got < n:
            data = self.rfile.read(min(65536, n - got))
            if not data:
                break
            got += len(data)
        body = json.dumps({"received": got}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class LabHTTPServer(socketserver.ThreadingMixIn, http.server.HTTPServer):
    """HTTP or HTTPS on one address; `delay` holds every new connection that long before the
    TLS handshake (or the first read): a slow but healthy server."""

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, addr, tls_ctx, delay):
        self.address_family = socket.AF_INET6 if ":" in addr[0] else socket.AF_INET
        self.tls_ctx = tls_ctx
        self.delay = delay
        super().__init__(addr, LabHandler)

    def server_bind(self):
        # HTTPServer.server_bind resolves the host name: skip that, bind as given.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]

    def finish_request(self, request, client_address):
        # Longer than any idle period the clients hold a connection for (the keep-alive
        # class), shorter than the run: a frozen handshake is given up after this.
        request.settimeout(30 if self.tls_ctx is None else 120)
        if self.delay:
            time.sleep(self.delay)
        if self.tls_ctx is not None:
            try:
                request = self.tls_ctx.wrap_socket(request, server_side=True)
            except (OSError, ssl.SSLError):
                return
        super().finish_request(request, client_address)


def udp_socket(addr, port):
    s = socket.socket(socket.AF_INET6 if ":" in addr else socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((addr, port))
    return s


def udp_echo(s):
    while True:
        data, peer = s.recvfrom(65535)
        s.sendto(data[:1200], peer)


def dns_answer(query, names):
    """A reply to one DNS query: A/AAAA from `names`, NXDOMAIN for unknown names."""
    if len(query) < 12:
        return None
    qid, flags, qd = struct.unpack("!HHH", query[:6])
    if qd != 1:
        return None
    pos = 12
    labels = []
    while pos < len(query) and query[pos] != 0:
        ln = query[pos]
        labels.append(query[pos + 1 : pos + 1 + ln].decode("ascii", "replace"))
        pos += 1 + ln
    pos += 1
    if pos + 4 > len(query):
        return None
    qtype, qclass = struct.unpack("!HH", query[pos : pos + 4])
    question = query[12 : pos + 4]
    name = ".".join(labels).lower()
    addrs = names.get(name)
    answers = b""
    rcode = 0
    if addrs is None:
        rcode = 3
    else:
        for a in addrs:
            if qtype == 1 and ":" not in a:
                answers += struct.pack("!HHHIH", 0xC00C, 1, 1, 60, 4) + socket.inet_pton(socket.AF_INET, a)
            elif qtype == 28 and ":" in a:
                answers += struct.pack("!HHHIH", 0xC00C, 28, 1, 60, 16) + socket.inet_pton(socket.AF_INET6, a)
    count = answers.count(b"\xc0\x0c") if answers else 0
    header = struct.pack("!HHHHHH", qid, 0x8180 | rcode | (flags & 0x0100), 1, count, 0, 0)
    return header + question + answers


def dns_server(s, names):
    while True:
        q, peer = s.recvfrom(4096)
        r = dns_answer(q, names)
        if r:
            s.sendto(r, peer)


def cmd_serve(args):
    """Every service the lab's hosts offer, on the given addresses, until killed."""
    spec = json.loads(args.spec)
    ctx = None
    if spec.get("cert"):
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(spec["cert"], spec["key"])
    threads = []

    def start(fn, *a):
        t = threading.Thread(target=fn, args=a, daemon=True)
        t.start()
        threads.append(t)

    for svc in spec["services"]:
        kind, addr = svc["kind"], svc["addr"]
        if kind in ("http", "https"):
            srv = LabHTTPServer((addr, svc["port"]), ctx if kind == "https" else None, svc.get("delay", 0))
            start(srv.serve_forever)
        elif kind == "udp-echo":
            start(udp_echo, udp_socket(addr, svc["port"]))
        elif kind == "dns":
            start(dns_server, udp_socket(addr, 53), spec["dns_names"])
        else:
            raise SystemExit(f"unknown service kind {kind}")
    # Every socket is bound: lab.py waits for this line instead of sleeping.
    print("ready", flush=True)
    for t in threads:
        t.join()


# --------------------------------------------------------------------------------------------
# Clients
# --------------------------------------------------------------------------------------------


def family(addr):
    return socket.AF_INET6 if ":" in addr else socket.AF_INET


def client_ctx():
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def flow(proto, sock, dst, dport):
    try:
        local = sock.getsockname()
        return {"protocol": proto, "src": local[0], "sport": local[1], "dst": dst, "dport": dport}
    except OSError:
        return {"protocol": proto, "dst": dst, "dport": dport}


def https_get(dst, port, path, sni, timeout, tls=True, body=None):
    """One request on a fresh connection; returns (flow, outcome, bytes received)."""
    sock = socket.socket(family(dst), socket.SOCK_STREAM)
    sock.settimeout(timeout)
    f = {"protocol": "tcp", "dst": dst, "dport": port}
    got = 0
    try:
        sock.connect((dst, port))
        f = flow("tcp", sock, dst, port)
        s = client_ctx().wrap_socket(sock, server_hostname=sni) if tls else sock
        method = "POST" if body is not None else "GET"
        req = f"{method} {path} HTTP/1.1\r\nHost: {sni}\r\nConnection: close\r\n"
        if body is not None:
            req += f"Content-Length: {len(body)}\r\n"
        s.sendall(req.encode() + b"\r\n")
        if body is not None:
            view = memoryview(body)
            for i in range(0, len(body), 65536):
                s.sendall(view[i : i + 65536])
        while True:
            data = s.recv(65536)
            if not data:
                break
            got += len(data)
        s.close()
        return f, "ok", got
    except (OSError, ssl.SSLError) as e:
        sock.close()
        return f, f"error: {type(e).__name__}: {e}", got


def cmd_fetch(args):
    """Several short fetches (browsing), or one big download/upload."""
    flows, outcomes = [], []
    body = b"u" * args.upload if args.upload else None
    for i in range(args.count):
        f, outcome, got = https_get(args.dst, args.port, args.path, args.sni, args.timeout, not args.plain, body)
        f["outcome"], f["received"] = outcome, got
        flows.append(f)
        outcomes.append(outcome)
        if args.pause and i + 1 < args.count:
            time.sleep(args.pause)
    print(json.dumps({"flows": flows, "ok": all(o == "ok" for o in outcomes)}))


def cmd_keepalive(args):
    """One TLS connection: a request, `idle` seconds of silence, a second request."""
    sock = socket.socket(family(args.dst), socket.SOCK_STREAM)
    sock.settimeout(args.timeout)
    sock.connect((args.dst, args.port))
    f = flow("tcp", sock, args.dst, args.port)
    conn = http.client.HTTPSConnection(args.sni, args.port, context=client_ctx(), timeout=args.timeout)
    conn.sock = client_ctx().wrap_socket(sock, server_hostname=args.sni)
    outcomes = []
    try:
        for i in range(2):
            conn.request("GET", "/", headers={"Host": args.sni})
            r = conn.getresponse()
            r.read()
            outcomes.append(r.status)
            if i == 0:
                time.sleep(args.idle)
    except (OSError, http.client.HTTPException) as e:
        outcomes.append(f"{type(e).__name__}: {e}")
    conn.close()
    f["outcome"] = "ok" if outcomes == [200, 200] else f"statuses {outcomes}"
    print(json.dumps({"flows": [f], "ok": f["outcome"] == "ok"}))


def cmd_tls_hello(args):
    """TLS handshakes that may never complete (the SNI freeze): connect, send the ClientHello,
    wait up to `timeout` for the handshake."""
    flows = []
    for _ in range(args.count):
        f, outcome, _ = https_get(args.dst, args.port, "/", args.sni, args.timeout)
        f["outcome"] = outcome
        flows.append(f)
    print(json.dumps({"flows": flows, "ok": True}))


def cmd_udp(args):
    """`count` datagrams of `size` bytes, `interval` apart, from one socket (or one new socket
    per datagram with --new-socket-every); counts the answers."""
    flows, answers = [], 0
    sock = None
    payload_head = bytes([0xC3, 0, 0, 0, 1]) if args.quic else b"lab"
    for i in range(args.count):
        if sock is None or (args.new_socket_every and i % args.new_socket_every == 0):
            if sock is not None:
                sock.close()
            sock = socket.socket(family(args.dst), socket.SOCK_DGRAM)
            sock.settimeout(args.wait)
            if args.src:
                sock.bind((args.src, 0))
            sock.connect((args.dst, args.port))
            flows.append(flow("udp", sock, args.dst, args.port))
        sock.send(payload_head + os.urandom(max(0, args.size - len(payload_head))))
        try:
            sock.recv(65535)
            answers += 1
        except (socket.timeout, OSError):
            pass
        if args.interval:
            time.sleep(args.interval)
    sock.close()
    print(json.dumps({"flows": flows, "answers": answers, "ok": True}))


def cmd_dns(args):
    """DNS queries over UDP; counts answers."""
    flows, answers = [], 0
    for i, name in enumerate(args.names):
        for qtype in (1, 28):
            sock = socket.socket(family(args.server), socket.SOCK_DGRAM)
            sock.settimeout(args.timeout)
            sock.connect((args.server, 53))
            q = struct.pack("!HHHHHH", random.randrange(65536), 0x0100, 1, 0, 0, 0)
            for label in name.split("."):
                q += bytes([len(label)]) + label.encode()
            q += b"\x00" + struct.pack("!HH", qtype, 1)
            sock.send(q)
            try:
                sock.recv(4096)
                answers += 1
            except (socket.timeout, OSError):
                pass
            flows.append(flow("udp", sock, args.server, 53))
            sock.close()
    print(json.dumps({"flows": flows, "answers": answers, "ok": answers == len(flows)}))


def checksum(data):
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    s = (s >> 16) + (s & 0xFFFF)
    s += s >> 16
    return ~s & 0xFFFF


def cmd_ping(args):
    """ICMP/ICMPv6 echo requests over a raw socket (the kernel fills the ICMPv6 checksum)."""
    v6 = ":" in args.dst
    if v6:
        sock = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
    else:
        sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    sock.settimeout(args.timeout)
    ident = os.getpid() & 0xFFFF
    replies = 0
    for seq in range(1, args.count + 1):
        kind = 128 if v6 else 8
        payload = b"lab-ping" * 4
        hdr = struct.pack("!BBHHH", kind, 0, 0, ident, seq)
        pkt = hdr + payload
        if not v6:
            pkt = struct.pack("!BBHHH", kind, 0, checksum(pkt), ident, seq) + payload
        sock.sendto(pkt, (args.dst, 0))
        deadline = time.monotonic() + args.timeout
        while time.monotonic() < deadline:
            try:
                data, _ = sock.recvfrom(2048)
            except (socket.timeout, OSError):
                break
            icmp = data if v6 else data[(data[0] & 0x0F) * 4 :]
            if len(icmp) >= 8:
                t, _, _, rid, rseq = struct.unpack("!BBHHH", icmp[:8])
                if t == (129 if v6 else 0) and rid == ident and rseq == seq:
                    replies += 1
                    break
        time.sleep(args.interval)
    proto = "icmpv6" if v6 else "icmp"
    print(json.dumps({"flows": [{"protocol": proto, "dst": args.dst, "id": ident}], "answers": replies,
                      "ok": replies == args.count}))


def cmd_sni_offset(args):
    """Where the server name sits in this client's ClientHello (for the DPI rule)."""
    i, o = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = client_ctx().wrap_bio(i, o, server_hostname=args.sni)
    try:
        obj.do_handshake()
    except ssl.SSLWantReadError:
        pass
    hello = o.read()
    print(json.dumps({"offset": hello.find(args.sni.encode()), "length": len(hello)}))


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)

    s = sub.add_parser("serve")
    s.add_argument("spec", help="JSON: services, cert, key, dns_names")
    s.set_defaults(fn=cmd_serve)

    s = sub.add_parser("fetch")
    s.add_argument("--dst", required=True)
    s.add_argument("--port", type=int, default=443)
    s.add_argument("--path", default="/")
    s.add_argument("--sni", default="www.example")
    s.add_argument("--count", type=int, default=1)
    s.add_argument("--pause", type=float, default=0)
    s.add_argument("--upload", type=int, default=0, help="POST this many bytes")
    s.add_argument("--plain", action="store_true", help="HTTP instead of HTTPS")
    s.add_argument("--timeout", type=float, default=15)
    s.set_defaults(fn=cmd_fetch)

    s = sub.add_parser("keepalive")
    s.add_argument("--dst", required=True)
    s.add_argument("--port", type=int, default=443)
    s.add_argument("--sni", default="www.example")
    s.add_argument("--idle", type=float, default=30)
    s.add_argument("--timeout", type=float, default=15)
    s.set_defaults(fn=cmd_keepalive)

    s = sub.add_parser("tls-hello")
    s.add_argument("--dst", required=True)
    s.add_argument("--port", type=int, default=443)
    s.add_argument("--sni", required=True)
    s.add_argument("--count", type=int, default=1)
    s.add_argument("--timeout", type=float, default=8)
    s.set_defaults(fn=cmd_tls_hello)

    s = sub.add_parser("udp")
    s.add_argument("--dst", required=True)
    s.add_argument("--port", type=int, required=True)
    s.add_argument("--count", type=int, default=10)
    s.add_argument("--size", type=int, default=64)
    s.add_argument("--interval", type=float, default=0.2)
    s.add_argument("--wait", type=float, default=0.3, help="how long to wait for each answer")
    s.add_argument("--quic", action="store_true", help="QUIC-like long-header first byte")
    s.add_argument("--new-socket-every", type=int, default=0)
    s.add_argument("--src", help="source address to send from")
    s.set_defaults(fn=cmd_udp)

    s = sub.add_parser("dns")
    s.add_argument("--server", required=True)
    s.add_argument("--timeout", type=float, default=2)
    s.add_argument("names", nargs="+")
    s.set_defaults(fn=cmd_dns)

    s = sub.add_parser("ping")
    s.add_argument("--dst", required=True)
    s.add_argument("--count", type=int, default=5)
    s.add_argument("--interval", type=float, default=0.2)
    s.add_argument("--timeout", type=float, default=1)
    s.set_defaults(fn=cmd_ping)

    s = sub.add_parser("sni-offset")
    s.add_argument("--sni", required=True)
    s.set_defaults(fn=cmd_sni_offset)

    args = p.parse_args()
    args.fn(args)


if __name__ == "__main__":
    sys.exit(main())
