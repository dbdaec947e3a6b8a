#!/usr/bin/env python3
"""rosguard's lab: a real Linux router built from network namespaces, with real servers and
clients through it, an ISP that emulates DPI with nftables, a labelled traffic generator and
a scorecard of what rosguard blocks.

Run it through `lab/run` (root, Linux). Commands:

  up        build the topology and servers, print the namespace names, hold until Ctrl-C
  traffic   build, run every traffic class once, write labels.json and conntrack samples
  score     build, start the conntrack bridge and `rosguard run`, run the traffic, write
            labels.json, scorecard.json and scorecard.md

Every run gets its own namespace names (`rgl<6 hex>-<role>`) and its own work directory, so
two runs can go on side by side; everything it started is stopped and every namespace it made
is deleted on exit, Ctrl-C or SIGTERM. All traffic stays inside those namespaces, on the
documentation and private ranges listed in TOPOLOGY below.

This file deliberately decides nothing about detection: what rosguard should do with each
class is written down in the labels, and what it did is read back from the bridge.
"""

import argparse
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

LAB_DIR = Path(__file__).resolve().parent
REPO = LAB_DIR.parent
HOSTS = str(LAB_DIR / "hosts.py")
PY = sys.executable

# --------------------------------------------------------------------------------------------
# Topology: one LAN behind the router, the ISP (with the DPI), the internet servers, an
# outside attacker. The router's addresses match the simulator's defaults (LAN
# 192.168.88.1/24 on `bridge`, WAN 198.51.100.2/24 on `ether1`, fd00:88::1/64, gateway
# 198.51.100.1), so rosguard's own-address and gateway protection see the same router.
# --------------------------------------------------------------------------------------------

ROUTER_LAN = ("192.168.88.1", "fd00:88::1")
ROUTER_WAN = ("198.51.100.2", "2001:db8:100::2")
GATEWAY = ("198.51.100.1", "2001:db8:100::1")
LAN_HOSTS = {
    "lan1": ("192.168.88.10", "fd00:88::10"),  # the user: browsing, downloads, frozen flows
    "lan2": ("192.168.88.20", "fd00:88::20"),  # runs an outbound port scan
    "lan3": ("192.168.88.30", "fd00:88::30"),  # a LAN server: target of inbound scans
    "lan4": ("192.168.88.40", "fd00:88::40"),  # a LAN host: target of the inbound UDP spray
}
ATTACKER = ("192.0.2.130", "2001:db8:3::2")  # the scanner
SPRAYER = ("192.0.2.131", "2001:db8:3::3")  # the UDP spray's source, on the attacker host

# The internet servers, each on both families: 203.0.113.N and 2001:db8:113::N.
SERVERS = {
    "web": 10,  # http 80, https 443/8443, udp echo 443 (QUIC-like, answered) and 7
    "sni": 20,  # https 443; the ISP drops ClientHellos naming SNI_BLOCKED on the way
    "big": 30,  # https 443: the 4 MiB download and 3 MB upload
    "freeze": 31,  # https 443; the ISP freezes every flow after FREEZE_BYTES
    "quic": 40,  # udp 443 (the ISP swallows it), https 443
    "slow": 50,  # https 443, every connection held SLOW_DELAY s before the handshake
    "dns": 53,  # dns
    "scan": 60,  # http 80 only; 443, 8443, 1000-1029 dropped (filtered), the rest closed
}
SNI_BLOCKED = "blocked.example"
FREEZE_BYTES = 24 * 1024
SLOW_DELAY = 4.0


def v4(n):
    return f"203.0.113.{n}"


def v6(n):
    return f"2001:db8:113::{n}"


DNS_NAMES = {
    "www.example": [v4(10), v6(10)],
    SNI_BLOCKED: [v4(20), v6(20)],
    "files.example": [v4(30), v6(30)],
}


class LabError(Exception):
    pass


def run(argv, check=True, input=None, timeout=60):
    p = subprocess.run(argv, input=input, capture_output=True, text=True, timeout=timeout)
    if check and p.returncode != 0:
        raise LabError(f"{' '.join(argv)}: exit {p.returncode}: {p.stderr.strip()}")
    return p


class Lab:
    """The namespaces, links, addresses, firewalls and servers of one run."""

    def __init__(self, workdir, run_id=None):
        self.id = run_id or secrets.token_hex(3)
        self.workdir = Path(workdir)
        self.ns = {
            role: f"rgl{self.id}-{role}"
            for role in ["router", "isp", "net", "atk", *LAN_HOSTS]
        }
        self.procs = []  # (name, Popen) of everything started, stopped in reverse order
        self.created = []

    # -- building ---------------------------------------------------------------------------

    def ip(self, role, *args):
        return run(["ip", "-n", self.ns[role], *args])

    def sh(self, role, argv, **kw):
        return run(["ip", "netns", "exec", self.ns[role], *argv], **kw)

    def sysctl(self, role, *settings):
        self.sh(role, ["sysctl", "-qw", *settings])

    def nft(self, role, ruleset):
        self.sh(role, ["nft", "-f", "-"], input=ruleset)

    def link(self, a, a_if, b, b_if):
        """A veth pair created straight inside the two namespaces (no names in the host's)."""
        run(["ip", "-n", self.ns[a], "link", "add", a_if, "type", "veth", "peer", "name", b_if,
             "netns", self.ns[b]])
        self.ip(a, "link", "set", a_if, "up")
        self.ip(b, "link", "set", b_if, "up")

    def addr(self, role, dev, *cidrs):
        for c in cidrs:
            extra = ["nodad"] if ":" in c else []
            self.ip(role, "addr", "add", c, "dev", dev, *extra)

    def build(self):
        for role, name in self.ns.items():
            run(["ip", "netns", "add", name])
            self.created.append(name)
            self.ip(role, "link", "set", "lo", "up")
            self.sysctl(role, "net.ipv6.conf.all.accept_ra=0", "net.ipv6.conf.default.accept_ra=0")

        # The router: a bridge for the LAN, ether1 to the ISP, forwarding and counting.
        self.ip("router", "link", "add", "bridge", "type", "bridge")
        self.ip("router", "link", "set", "bridge", "up")
        for host, (a4, a6) in LAN_HOSTS.items():
            self.link(host, "eth0", "router", host)
            self.ip("router", "link", "set", host, "master", "bridge")
            self.addr(host, "eth0", f"{a4}/24", f"{a6}/64")
            self.ip(host, "route", "add", "default", "via", ROUTER_LAN[0])
            self.ip(host, "-6", "route", "add", "default", "via", ROUTER_LAN[1])
        self.addr("router", "bridge", f"{ROUTER_LAN[0]}/24", f"{ROUTER_LAN[1]}/64")
        self.link("router", "ether1", "isp", "down0")
        self.addr("router", "ether1", f"{ROUTER_WAN[0]}/24", f"{ROUTER_WAN[1]}/64")
        self.ip("router", "route", "add", "default", "via", GATEWAY[0])
        self.ip("router", "-6", "route", "add", "default", "via", GATEWAY[1])

        # The ISP: the router's gateway; routes the LAN (a routed subnet, so outside hosts can
        # reach LAN hosts) and the internet; runs the DPI.
        self.addr("isp", "down0", f"{GATEWAY[0]}/24", f"{GATEWAY[1]}/64")
        self.link("isp", "up0", "net", "eth0")
        self.addr("isp", "up0", "192.0.2.1/25", "2001:db8:2::1/64")
        self.link("isp", "atk0", "atk", "eth0")
        self.addr("isp", "atk0", "192.0.2.129/25", "2001:db8:3::1/64")
        self.ip("isp", "route", "add", "192.168.88.0/24", "via", ROUTER_WAN[0])
        self.ip("isp", "-6", "route", "add", "fd00:88::/64", "via", ROUTER_WAN[1])
        self.ip("isp", "route", "add", "203.0.113.0/24", "via", "192.0.2.2")
        self.ip("isp", "-6", "route", "add", "2001:db8:113::/64", "via", "2001:db8:2::2")

        # The internet servers: every server address on the net namespace's loopback.
        self.addr("net", "eth0", "192.0.2.2/25", "2001:db8:2::2/64")
        for n in SERVERS.values():
            self.addr("net", "lo", f"{v4(n)}/32", f"{v6(n)}/128")
        self.ip("net", "route", "add", "default", "via", "192.0.2.1")
        self.ip("net", "-6", "route", "add", "default", "via", "2001:db8:2::1")

        self.addr("atk", "eth0", f"{ATTACKER[0]}/25", f"{ATTACKER[1]}/64")
        self.addr("atk", "eth0", f"{SPRAYER[0]}/25", f"{SPRAYER[1]}/64")
        self.ip("atk", "route", "add", "default", "via", "192.0.2.129")
        self.ip("atk", "-6", "route", "add", "default", "via", "2001:db8:3::1")

        for role in ("router", "isp"):
            self.sysctl(role, "net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1",
                        "net.netfilter.nf_conntrack_acct=1")
        self.firewalls()

    def firewalls(self):
        # The router tracks every connection it forwards or terminates (one stateful rule per
        # hook is what makes a namespace track at all), masquerades IPv4 from the LAN like a
        # RouterOS default configuration, and forwards inbound traffic to the LAN (a DMZ-like
        # routed LAN, so inbound scans reach a LAN host). rosguard's drops go in their own
        # table (`--mirror-nft`), not here.
        self.nft("router", """
table inet lab_router {
  chain forward {
    type filter hook forward priority filter; policy accept;
    ct state established,related accept
  }
  chain input {
    type filter hook input priority filter; policy accept;
    ct state established,related accept
  }
  chain output {
    type filter hook output priority filter; policy accept;
    ct state established,related accept
  }
}
table ip lab_nat {
  chain postrouting {
    type nat hook postrouting priority srcnat; policy accept;
    oifname "ether1" ip saddr 192.168.88.0/24 masquerade
  }
}
""")
        self.nft("isp", self.dpi_ruleset())
        # Internet host firewall: a silent UDP port (no ICMP), and the scan target's filtered
        # ports.
        s4, s6 = v4(SERVERS["scan"]), v6(SERVERS["scan"])
        self.nft("net", f"""
table inet lab_host {{
  chain input {{
    type filter hook input priority filter; policy accept;
    udp dport 514 drop
    ip daddr {s4} tcp dport {{ 443, 8443, 1000-1029 }} drop
    ip6 daddr {s6} tcp dport {{ 443, 8443, 1000-1029 }} drop
  }}
}}
""")
        # The LAN server: some ports filtered (dropped), the rest closed (RST) except 443.
        self.nft("lan3", """
table inet lab_host {
  chain input {
    type filter hook input priority filter; policy accept;
    tcp dport { 1000-1099, 8443 } drop
  }
}
""")

    def dpi_ruleset(self):
        """The ISP's DPI, in the forward chain of the isp namespace.

        (a) TLS freeze by SNI: a TCP segment to port 443 whose payload is a TLS handshake
            record (byte 0 = 0x16) carrying a ClientHello (byte 5 = 0x01) with SNI_BLOCKED at
            the offset where the lab's TLS client puts the server name. nftables matches raw
            payload at fixed offsets only, so the offset is learned from the client's own
            ClientHello (`hosts.py sni-offset`); the handshake itself passes, exactly like the
            field's "TLS freeze".
        (b) Freeze after FREEZE_BYTES: every packet of a flow to or from the freeze server once
            the connection has carried that many bytes (conntrack's byte counter, both ways).
        (c) UDP 443 to the quic server is swallowed.
        """
        p = run([PY, HOSTS, "sni-offset", "--sni", SNI_BLOCKED])
        off = json.loads(p.stdout)["offset"]
        if off < 0:
            raise LabError("the lab's TLS client does not put the SNI in its ClientHello")
        name_hex = SNI_BLOCKED.encode().hex()
        bits = len(SNI_BLOCKED) * 8
        f4, f6 = v4(SERVERS["freeze"]), v6(SERVERS["freeze"])
        q4, q6 = v4(SERVERS["quic"]), v6(SERVERS["quic"])
        self.sni_offset = off
        return f"""
table inet lab_dpi {{
  chain forward {{
    type filter hook forward priority filter; policy accept;
    tcp dport 443 @ih,0,8 0x16 @ih,40,8 0x01 @ih,{off * 8},{bits} 0x{name_hex} counter drop
    ip daddr {f4} ct bytes > {FREEZE_BYTES} counter drop
    ip saddr {f4} ct bytes > {FREEZE_BYTES} counter drop
    ip6 daddr {f6} ct bytes > {FREEZE_BYTES} counter drop
    ip6 saddr {f6} ct bytes > {FREEZE_BYTES} counter drop
    ip daddr {q4} udp dport 443 counter drop
    ip6 daddr {q6} udp dport 443 counter drop
  }}
}}
"""

    def start(self, name, role, argv, ready_line=None, timeout=20):
        """Starts a long-running program in a namespace (its own process group); with
        `ready_line`, waits until it prints that line (bounded by `timeout`)."""
        log = open(self.workdir / f"{name}.log", "w")
        p = subprocess.Popen(["ip", "netns", "exec", self.ns[role], *argv] if role else argv,
                             stdout=subprocess.PIPE if ready_line else log, stderr=log,
                             text=True, start_new_session=True)
        self.procs.append((name, p))
        if ready_line:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                line = p.stdout.readline()
                if not line:
                    raise LabError(f"{name} ended before it was ready; see {log.name}")
                if line.strip() == ready_line or line.startswith(ready_line):
                    return p, line.strip()
            raise LabError(f"{name} was not ready within {timeout} s")
        return p, None

    def servers(self):
        cert, key = self.workdir / "cert.pem", self.workdir / "key.pem"
        run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
             "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", "/CN=www.example"])
        services = []
        for name, n in SERVERS.items():
            for a in (v4(n), v6(n)):
                if name == "dns":
                    services.append({"kind": "dns", "addr": a})
                elif name == "scan":
                    services.append({"kind": "http", "addr": a, "port": 80})
                else:
                    services.append({"kind": "https", "addr": a, "port": 443,
                                     "delay": SLOW_DELAY if name == "slow" else 0})
                if name == "web":
                    services += [{"kind": "http", "addr": a, "port": 80},
                                 {"kind": "https", "addr": a, "port": 8443},
                                 {"kind": "udp-echo", "addr": a, "port": 443},
                                 {"kind": "udp-echo", "addr": a, "port": 7}]
                if name == "quic":
                    services.append({"kind": "udp-echo", "addr": a, "port": 443})
        spec = {"cert": str(cert), "key": str(key), "services": services, "dns_names": DNS_NAMES}
        self.start("servers-net", "net", [PY, HOSTS, "serve", json.dumps(spec)], ready_line="ready")
        lan3 = [{"kind": "https", "addr": a, "port": 443} for a in LAN_HOSTS["lan3"]]
        self.start("servers-lan3", "lan3", [PY, HOSTS, "serve", json.dumps(
            {"cert": str(cert), "key": str(key), "services": lan3, "dns_names": {}})], ready_line="ready")
        # Through the router, both families: the lab works end to end before traffic starts.
        for dst in (v4(10), v6(10)):
            p = self.sh("lan1", [PY, HOSTS, "fetch", "--dst", dst, "--timeout", "5"], check=False)
            if p.returncode != 0 or not json.loads(p.stdout or "{}").get("ok"):
                raise LabError(f"lan1 cannot fetch https://{dst}/ through the router: {p.stdout}{p.stderr}")
        # The warm-up fetches must not count as traffic: start the table empty.
        self.flush_conntrack()

    def flush_conntrack(self):
        for fam in ("ipv4", "ipv6"):
            self.sh("router", ["conntrack", "-F", "-f", fam], check=False)

    def conntrack_text(self):
        out = []
        for fam in ("ipv4", "ipv6"):
            p = self.sh("router", ["conntrack", "-L", "-f", fam, "-o", "extended,id"], check=False)
            out.append(p.stdout)
        return "".join(out)

    # -- tearing down -----------------------------------------------------------------------

    def stop(self):
        for name, p in reversed(self.procs):
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        for name, p in reversed(self.procs):
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                p.wait(timeout=5)
        self.procs.clear()
        for name in reversed(self.created):
            # Anything still inside (a client that outlived its parent) was started by this
            # run: end it by pid, then delete the namespace.
            pids = run(["ip", "netns", "pids", name], check=False).stdout.split()
            for pid in pids:
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except (ProcessLookupError, ValueError):
                    pass
            run(["ip", "netns", "del", name], check=False)
        self.created.clear()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


# --------------------------------------------------------------------------------------------
# Traffic classes. Each: who runs what, what a good detector should do with it, and which
# addresses must end on the block list (`block`) or must never (`spare`).
# --------------------------------------------------------------------------------------------


def client(*args):
    return [PY, HOSTS, *args]


def traffic_classes(idle):
    L1, L2, L3, L4 = (LAN_HOSTS[h] for h in ("lan1", "lan2", "lan3", "lan4"))
    S = SERVERS
    c = []

    def add(name, desc, expected, runs, block=(), spare=(), side=None, note=None):
        c.append({"class": name, "description": desc, "expected": expected, "block_side": side,
                  "block": list(block), "spare": list(spare), "runs": runs, "note": note})

    add("browsing", "several short HTTPS (443, 8443) and HTTP (80) fetches, IPv4 and IPv6",
        "spared", [("lan1", client("fetch", "--dst", v4(S["web"]), "--count", "4", "--pause", "0.3")),
                   ("lan1", client("fetch", "--dst", v6(S["web"]), "--count", "3", "--pause", "0.3")),
                   ("lan1", client("fetch", "--dst", v4(S["web"]), "--port", "8443", "--count", "2")),
                   ("lan1", client("fetch", "--dst", v4(S["web"]), "--port", "80", "--plain", "--count", "2")),
                   ("lan1", client("fetch", "--dst", v6(S["web"]), "--port", "80", "--plain", "--count", "2"))],
        spare=[v4(S["web"]), v6(S["web"]), *L1])
    add("download", "one 4 MiB HTTPS download (IPv4)", "spared",
        [("lan1", client("fetch", "--dst", v4(S["big"]), "--path", f"/bytes/{4 * 1024 * 1024}", "--timeout", "30"))],
        spare=[v4(S["big"]), L1[0]])
    add("upload", "one 3 MB HTTPS upload (IPv6)", "spared",
        [("lan1", client("fetch", "--dst", v6(S["big"]), "--path", "/upload", "--upload", "3000000", "--timeout", "30"))],
        spare=[v6(S["big"]), L1[1]])
    add("keepalive", f"one TLS connection: a request, {idle:g} s idle, a second request", "spared",
        [("lan1", client("keepalive", "--dst", v4(S["web"]), "--idle", str(idle)))],
        spare=[v4(S["web"]), L1[0]])
    add("udp-answered", "UDP request/response: 10 datagrams to an echo on port 7, and QUIC-like "
        "UDP 443 answered by the server", "spared",
        [("lan1", client("udp", "--dst", v4(S["web"]), "--port", "7")),
         ("lan1", client("udp", "--dst", v6(S["web"]), "--port", "443", "--quic", "--size", "1200"))],
        spare=[v4(S["web"]), v6(S["web"]), *L1])
    add("udp-unanswered", "10 datagrams to UDP 514 that the server drops silently (fire and "
        "forget, like syslog)", "spared",
        [("lan1", client("udp", "--dst", v4(S["web"]), "--port", "514", "--wait", "0.05"))],
        spare=[v4(S["web"]), L1[0]])
    add("tls-sni-frozen", f"TLS to port 443 with SNI {SNI_BLOCKED}: the ISP drops the "
        "ClientHello after the TCP handshake (the TLS freeze); 2 flows IPv4, 2 IPv6 at once, "
        "each given up after 8 s", "blocked",
        [("lan1", client("tls-hello", "--dst", dst, "--sni", SNI_BLOCKED, "--timeout", "8"))
         for dst in (v4(S["sni"]), v4(S["sni"]), v6(S["sni"]), v6(S["sni"]))],
        block=[v4(S["sni"]), v6(S["sni"])], spare=[*L1], side="dst")
    add("nkb-freeze", f"a 1 MiB HTTPS download the ISP freezes after {FREEZE_BYTES // 1024} KiB "
        "(both directions dropped from then on), IPv4 and IPv6", "blocked",
        [("lan1", client("fetch", "--dst", v4(S["freeze"]), "--path", "/bytes/1048576", "--timeout", "10")),
         ("lan1", client("fetch", "--dst", v6(S["freeze"]), "--path", "/bytes/1048576", "--timeout", "10"))],
        block=[v4(S["freeze"]), v6(S["freeze"])], spare=[*L1], side="dst",
        note="desired verdict: the destination is DPI-frozen; the reply counter already passed "
             "the threshold before the freeze, so the plain counter rule cannot see it")
    add("quic-swallowed", "QUIC-like UDP 443 (1200-byte long-header datagrams) the ISP "
        "swallows, IPv4 and IPv6", "blocked",
        [("lan1", client("udp", "--dst", v4(S["quic"]), "--port", "443", "--quic", "--size", "1200", "--wait", "0.2")),
         ("lan1", client("udp", "--dst", v6(S["quic"]), "--port", "443", "--quic", "--size", "1200", "--wait", "0.2"))],
        block=[v4(S["quic"]), v6(S["quic"])], spare=[*L1], side="dst")
    scan_ports = "22,25,80,443,1000-1029,8443"
    add("scan-outbound", f"a LAN host scans an internet host (nmap -sT, ports {scan_ports}: "
        "80 open, 443, 8443, 1000-1029 filtered, the rest closed), IPv4 and IPv6", "spared",
        [("lan2", ["nmap", "-sT", "-Pn", "-n", "--max-retries", "1", "-p", scan_ports, v4(S["scan"])]),
         ("lan2", ["nmap", "-6", "-sT", "-Pn", "-n", "--max-retries", "1", "-p", scan_ports, v6(S["scan"])])],
        spare=[*L2, v4(S["scan"]), v6(S["scan"])],
        note="the LAN host is never blocked and the scanned host did nothing wrong; a later "
             "phase may report the scanning LAN host instead")
    in_ports = "22,80,443,1000-1099,8443"
    add("scan-inbound", f"an outside host scans a LAN host (nmap -sS, ports {in_ports}: 443 "
        "open, 1000-1099 and 8443 filtered, the rest closed and answered by RST), IPv4 and IPv6",
        "blocked",
        # -S: the host has the sprayer's addresses too, and nmap would pick one of them.
        [("atk", ["nmap", "-sS", "-Pn", "-n", "--max-retries", "2", "-e", "eth0", "-S", ATTACKER[0],
                  "-p", in_ports, L3[0]]),
         ("atk", ["nmap", "-6", "-sS", "-Pn", "-n", "--max-retries", "2", "-e", "eth0", "-S",
                  ATTACKER[1], "-p", in_ports, L3[1]])],
        block=[*ATTACKER], spare=[*L3], side="src")
    add("udp-spray-inbound", "an outside host sprays 150 datagrams from 15 source ports at a LAN "
        "host's UDP 443 (closed: the host answers ICMP port unreachable), IPv4 and IPv6", "blocked",
        [("atk", client("udp", "--src", src, "--dst", dst, "--port", "443", "--count", "150",
                        "--interval", "0.02", "--wait", "0.01", "--new-socket-every", "10", "--size", "200"))
         for src, dst in zip(SPRAYER, L4)],
        block=[*SPRAYER], spare=[*L4], side="src")
    add("slow-server", f"HTTPS to a server that holds each connection {SLOW_DELAY:g} s before "
        "the TLS handshake, then answers", "spared",
        [("lan1", client("fetch", "--dst", v4(S["slow"]), "--count", "2", "--timeout", "15")),
         ("lan1", client("fetch", "--dst", v6(S["slow"]), "--count", "1", "--timeout", "15"))],
        spare=[v4(S["slow"]), v6(S["slow"]), *L1])
    add("dns", "DNS A and AAAA queries over UDP to the DNS server, IPv4 and IPv6", "spared",
        [("lan1", client("dns", "--server", v4(S["dns"]), "www.example", "files.example", "nosuch.example")),
         ("lan1", client("dns", "--server", v6(S["dns"]), "www.example", SNI_BLOCKED))],
        spare=[v4(S["dns"]), v6(S["dns"]), *L1])
    add("ping", "ICMP and ICMPv6 echo to the router and to its gateway", "spared",
        [("lan1", client("ping", "--dst", ROUTER_LAN[0])),
         ("lan1", client("ping", "--dst", ROUTER_LAN[1])),
         ("lan1", client("ping", "--dst", GATEWAY[0])),
         ("lan1", client("ping", "--dst", GATEWAY[1]))],
        spare=[*ROUTER_LAN, *GATEWAY, *L1])
    return c


def run_traffic(lab, idle, sample, sample_interval=0.5, max_seconds=None):
    """Runs every class at once (each in its own processes), samples the router's conntrack
    while they run, and returns the labelled classes. Bounded: every client has its own
    timeouts, and the whole run is killed after `max_seconds`."""
    classes = traffic_classes(idle)
    max_seconds = max_seconds or idle + 60
    running = []
    t0 = time.time()
    for cl in classes:
        cl["started"] = time.time()
        cl["processes"] = []
        for role, argv in cl["runs"]:
            p = subprocess.Popen(["ip", "netns", "exec", lab.ns[role], *argv], stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True, start_new_session=True)
            lab.procs.append((f"{cl['class']}-{role}", p))
            running.append((cl, role, argv, p))
    deadline = time.monotonic() + max_seconds
    pending = list(running)
    while pending and time.monotonic() < deadline:
        if sample:
            sample(time.time())
        time.sleep(sample_interval)
        pending = [r for r in pending if r[3].poll() is None]
    for cl, role, argv, p in running:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
        out, err = p.communicate()
        rec = {"host": role, "argv": argv[2:] if argv[0] == PY else argv, "exit": p.returncode}
        try:
            rec.update(json.loads(out.strip().splitlines()[-1]))
        except (json.JSONDecodeError, IndexError):
            rec["output"] = out[-2000:]
        if err.strip():
            rec["stderr"] = err[-2000:]
        cl["processes"].append(rec)
        cl["ended"] = max(cl.get("ended", 0), time.time())
    for cl in classes:
        cl.pop("runs")
        cl["flows"] = [f for r in cl["processes"] for f in r.get("flows", [])]
    print(f"lab: traffic ran {time.time() - t0:.1f} s", file=sys.stderr)
    return classes


def labels_doc(lab, classes):
    return {
        "run": lab.id,
        "namespaces": lab.ns,
        "router": {"lan": list(ROUTER_LAN), "wan": list(ROUTER_WAN), "gateway": list(GATEWAY)},
        "dns_server": [v4(SERVERS["dns"]), v6(SERVERS["dns"])],
        "lan_hosts": LAN_HOSTS,
        "attacker": list(ATTACKER),
        "sprayer": list(SPRAYER),
        "dpi": {"sni_blocked": SNI_BLOCKED, "sni_offset": getattr(lab, "sni_offset", None),
                "freeze_bytes": FREEZE_BYTES, "quic_swallowed": [v4(SERVERS["quic"]), v6(SERVERS["quic"])]},
        "always_spared": [*ROUTER_LAN, *ROUTER_WAN, *GATEWAY, v4(SERVERS["dns"]), v6(SERVERS["dns"]),
                          *[a for h in LAN_HOSTS.values() for a in h]],
        "classes": classes,
    }


# --------------------------------------------------------------------------------------------
# Commands
# --------------------------------------------------------------------------------------------


def preflight():
    if os.geteuid() != 0:
        raise LabError("the lab needs root (network namespaces, nftables, conntrack)")
    missing = [t for t in ("ip", "nft", "conntrack", "nmap", "openssl") if not shutil.which(t)]
    if missing:
        raise LabError(f"missing tools: {', '.join(missing)}; "
                       "apt-get install -y nftables conntrack nmap openssl iproute2")


def new_workdir(out):
    if out:
        Path(out).mkdir(parents=True, exist_ok=True)
        return Path(out)
    return Path(tempfile.mkdtemp(prefix="rosguard-lab-"))


def cmd_up(args):
    work = new_workdir(args.out)
    with Lab(work) as lab:
        lab.build()
        lab.servers()
        print(json.dumps({"run": lab.id, "namespaces": lab.ns, "workdir": str(work)}, indent=2))
        print("lab: up; Ctrl-C tears it down", file=sys.stderr)
        signal.pause()


def cmd_traffic(args):
    work = new_workdir(args.out)
    samples = []
    with Lab(work) as lab:
        lab.build()
        lab.servers()

        def sample(t):
            samples.append({"t": t, "conntrack": lab.conntrack_text()})

        classes = run_traffic(lab, args.idle, sample)
        (work / "labels.json").write_text(json.dumps(labels_doc(lab, classes), indent=2))
        with open(work / "conntrack-samples.jsonl", "w") as f:
            for s in samples:
                f.write(json.dumps(s) + "\n")
    print(f"lab: labels in {work / 'labels.json'}, conntrack samples in {work / 'conntrack-samples.jsonl'}")


def main():
    p = argparse.ArgumentParser(description="rosguard's network-namespace lab")
    sub = p.add_subparsers(dest="cmd", required=True)
    for name, fn, helptext in [("up", cmd_up, "build and hold"),
                               ("traffic", cmd_traffic, "run the traffic once, write labels"),
                               ("score", None, "the scorecard run")]:
        s = sub.add_parser(name, help=helptext)
        s.add_argument("--out", help="work directory (default: a new temporary one)")
        s.add_argument("--idle", type=float, default=30, help="keep-alive idle seconds")
        if name == "score":
            s.add_argument("--no-build", action="store_true", help="use the binaries already built")
            s.add_argument("--record", action="store_true",
                           help="no daemon: record the traffic's polls with `rosguard record` "
                                "into lab.rec (for `rosguard replay`), no scorecard")
            s.add_argument("--settings", choices=["default", "recommended"], default="default",
                           help="rosguard's detection settings: the defaults, or the README's "
                                "recommended min_observations/min_flagged_connections/escalation")
        s.set_defaults(fn=fn)
    args = p.parse_args()
    if args.cmd == "score":
        from score import cmd_score
        args.fn = cmd_score

    def on_term(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    try:
        preflight()
        args.fn(args)
    except KeyboardInterrupt:
        print("lab: interrupted, cleaned up", file=sys.stderr)
        return 130
    except LabError as e:
        print(f"lab: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
