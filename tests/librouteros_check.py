#!/usr/bin/env python3
"""Checks routeros-sim against a real third-party RouterOS API client: Python librouteros.

Usage: python3 tests/librouteros_check.py HOST PORT [--min-flagged N] [--min-or N]

Uses librouteros (the version pinned in tests/requirements.txt) unmodified to log in as admin
with an empty password, print /ip/firewall/connection with a query and a .proplist, find its
own session in /user/active and the default routes in /ip/route and /ipv6/route, add an
address-list entry, add it again (librouteros must raise TrapError "already have such entry"),
and remove it. Exits 0 on success; non-zero with a clear message on any failure.
"""

import argparse
import sys
from typing import NoReturn

LIST = "rosguard_librouteros_check"
ADDRESS = "203.0.113.45"


def fail(message: str) -> NoReturn:
    print(f"librouteros check FAILED: {message}", file=sys.stderr)
    sys.exit(1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("host")
    parser.add_argument("port", type=int)
    parser.add_argument(
        "--min-flagged",
        type=int,
        default=0,
        help="fail unless at least N connections match orig-packets>3 and repl-packets<3",
    )
    parser.add_argument(
        "--min-or",
        type=int,
        default=1,
        help="fail unless the Or(udp, icmp) query returns at least N connections (default 1)",
    )
    args = parser.parse_args()

    try:
        from importlib.metadata import version

        from librouteros import connect
        from librouteros.exceptions import TrapError
        from librouteros.query import Key, Or
    except ImportError as e:
        fail(f"librouteros is not importable ({e}); run: python3 -m pip install -r tests/requirements.txt")

    print(f"librouteros {version('librouteros')} against {args.host}:{args.port}")

    try:
        api = connect(host=args.host, username="admin", password="", port=args.port, timeout=10)
    except Exception as e:  # noqa: BLE001 - any failure here is the finding
        fail(f"login as admin with an empty password: {type(e).__name__}: {e}")

    # 1. A filtered print with a .proplist, through librouteros's query API.
    conn = api.path("ip", "firewall", "connection")
    id_, proto, orig, repl, dport = (Key(".id"), Key("protocol"), Key("orig-packets"), Key("repl-packets"), Key("dst-port"))
    selected = {".id", "protocol", "orig-packets", "repl-packets", "dst-port"}
    try:
        rows = list(conn.select(id_, proto, orig, repl, dport).where(proto == "tcp", orig > 3, repl < 3))
    except Exception as e:  # noqa: BLE001
        fail(f"connection print with a query: {type(e).__name__}: {e}")
    for row in rows:
        extra = set(row) - selected
        if extra:
            fail(f"row has properties outside the .proplist: {sorted(extra)} in {row}")
        if row.get("protocol") != "tcp" or not (row["orig-packets"] > 3 and row["repl-packets"] < 3):
            fail(f"row does not match the query: {row}")
        if not str(row.get(".id", "")).startswith("*"):
            fail(f"row without a proper .id: {row}")
    if len(rows) < args.min_flagged:
        fail(f"expected at least {args.min_flagged} flagged tcp connections, got {len(rows)}: {rows}")
    print(f"ok: print with query and .proplist returned {len(rows)} flagged tcp connection(s)")

    # An OR query (?# stack operation) as librouteros builds it.
    try:
        other = list(conn.select(id_, proto).where(Or(proto == "udp", proto == "icmp")))
    except Exception as e:  # noqa: BLE001
        fail(f"connection print with an Or() query: {type(e).__name__}: {e}")
    if any(r.get("protocol") not in ("udp", "icmp") for r in other):
        fail(f"Or() query returned other protocols: {other}")
    if len(other) < args.min_or:
        fail(f"expected at least {args.min_or} udp/icmp connections from the Or() query, got {len(other)}: {other}")
    if args.min_or >= 2 and {r.get("protocol") for r in other} != {"udp", "icmp"}:
        fail(f"Or() query did not return both sides of the Or: {other}")
    print(f"ok: Or() query returned {len(other)} udp/icmp connection(s)")

    # Its own session in /user/active, and the default routes.
    try:
        sessions = list(api.path("user", "active").select(Key("name"), Key("via"), Key("address")).where(Key("name") == "admin"))
        v4 = list(api.path("ip", "route").select(Key("dst-address"), Key("gateway")).where(Key("dst-address") == "0.0.0.0/0"))
        v6 = list(api.path("ipv6", "route").select(Key("dst-address"), Key("gateway")).where(Key("dst-address") == "::/0"))
    except Exception as e:  # noqa: BLE001
        fail(f"/user/active or route print: {type(e).__name__}: {e}")
    if not any(s.get("via") in ("api", "api-ssl") and s.get("address") for s in sessions):
        fail(f"/user/active does not show this API session: {sessions}")
    if len(v4) != 1 or len(v6) != 1 or not v4[0].get("gateway") or not v6[0].get("gateway"):
        fail(f"expected one default route per family with a gateway, got {v4} and {v6}")
    print(f"ok: /user/active shows {len(sessions)} admin session(s); default routes via {v4[0]['gateway']} and {v6[0]['gateway']}")

    # 2. Address-list add.
    lists = api.path("ip", "firewall", "address-list")
    try:
        new_id = lists.add(list=LIST, address=ADDRESS, timeout="1d", comment="librouteros check")
    except Exception as e:  # noqa: BLE001
        fail(f"address-list add: {type(e).__name__}: {e}")
    if not new_id.startswith("*"):
        fail(f"address-list add returned {new_id!r}, expected an id like *1")
    print(f"ok: added {ADDRESS} to {LIST} as {new_id}")

    # 3. The same again must be refused with a trap.
    try:
        lists.add(list=LIST, address=ADDRESS)
    except TrapError as e:
        if "already have such entry" not in str(e):
            fail(f"duplicate add trapped with an unexpected message: {e}")
        print(f"ok: duplicate refused: {e}")
    except Exception as e:  # noqa: BLE001
        fail(f"duplicate add raised {type(e).__name__}: {e}, expected TrapError")
    else:
        fail("duplicate address-list add was accepted")

    entries = list(lists.select(Key(".id"), Key("address"), Key("dynamic")).where(Key("list") == LIST))
    if [(e.get(".id"), e.get("address"), e.get("dynamic")) for e in entries] != [(new_id, ADDRESS, True)]:
        fail(f"address-list print shows {entries}, expected one dynamic entry {new_id}")

    # 4. Remove it; a second remove traps.
    try:
        lists.remove(new_id)
    except Exception as e:  # noqa: BLE001
        fail(f"address-list remove: {type(e).__name__}: {e}")
    if list(lists.select(Key(".id")).where(Key("list") == LIST)):
        fail("entry still listed after remove")
    try:
        lists.remove(new_id)
    except TrapError as e:
        if not str(e).startswith("no such item"):
            fail(f"remove of a vanished id trapped with: {e}")
    else:
        fail("remove of a vanished id was accepted")
    print(f"ok: removed {new_id}")

    api.close()
    print("librouteros check passed")


if __name__ == "__main__":
    main()
