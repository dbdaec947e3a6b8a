"""The original RouterOS script's algorithm, replayed over the API with librouteros.

Part of rosguard-bench. The script runs on the router: it `find`s the candidate connections,
then for each one `get`s its fields, checks them, `find`s the address on the block list and
`add`s it when absent. Over the API that is: one print of `.id` with the candidate filter, then
per candidate a print by `?.id=` (the `get`), a print of the address-list by list and address
(the `find`) and an `add`, each a round trip. Unlike the script, it does not stop after 50
connections: it works through every candidate, so its time can be compared with one rosguard
cycle that blocks the same addresses. It reports counts and times as JSON on stdout. It
deliberately skips the script's allowlist and local-address checks (the benchmark table has no
such addresses) and the removal of the connection (rosguard's run in this comparison does not
remove either).
"""

import argparse
import json
import resource
import sys
import time

from librouteros import connect
from librouteros.exceptions import TrapError

GET_PROPS = "protocol,src-address,src-port,dst-address,dst-port,orig-packets,repl-packets"


def split_port(address: str, family: str):
    """`1.2.3.4:443` or `[2001:db8::1]:443` (older routers) -> (address, port)."""
    if family == "ipv6":
        if address.startswith("["):
            host, _, port = address[1:].partition("]:")
            return host, port
        return address, None
    host, sep, port = address.partition(":")
    return host, (port if sep else None)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--user", default="admin")
    p.add_argument("--password", default="")
    p.add_argument("--list", required=True, help="the block address-list")
    p.add_argument("--filter", required=True, help="JSON list of query words for the find")
    p.add_argument("--ports", default="443,80,8443")
    p.add_argument("--protocols", default="tcp,udp")
    p.add_argument("--min-orig", type=int, default=3)
    p.add_argument("--max-repl", type=int, default=2)
    p.add_argument("--timeout", default="1d")
    a = p.parse_args()
    query = json.loads(a.filter)
    ports = {int(x) for x in a.ports.split(",") if x}
    protocols = set(a.protocols.split(","))

    api = connect(host=a.host, port=a.port, username=a.user, password=a.password, timeout=600)
    candidates = added = already = 0
    started = time.perf_counter()
    find_seconds = 0.0
    for family in ("ip", "ipv6"):
        conn = f"/{family}/firewall/connection"
        lists = f"/{family}/firewall/address-list"
        t = time.perf_counter()
        ids = [row[".id"] for row in api.rawCmd(f"{conn}/print", "=.proplist=.id", *query)]
        find_seconds += time.perf_counter() - t
        candidates += len(ids)
        for conn_id in ids:
            rows = tuple(
                api.rawCmd(f"{conn}/print", f"=.proplist={GET_PROPS}", f"?.id={conn_id}")
            )
            if not rows:
                continue  # gone meanwhile
            row = rows[0]
            dst, port = split_port(str(row.get("dst-address", "")), family)
            port = row.get("dst-port", port)
            try:
                port = int(port)
            except (TypeError, ValueError):
                continue
            if row.get("protocol") not in protocols or port not in ports:
                continue
            if not (int(row.get("orig-packets", 0)) > a.min_orig
                    and int(row.get("repl-packets", 0)) <= a.max_repl):
                continue
            found = tuple(
                api.rawCmd(f"{lists}/print", "=.proplist=.id", f"?list={a.list}", f"?address={dst}")
            )
            if found:
                already += 1
                continue
            src, _ = split_port(str(row.get("src-address", "")), family)
            comment = f"script: {row.get('protocol')} {src} -> {dst}:{port}"
            try:
                tuple(
                    api.rawCmd(
                        f"{lists}/add",
                        f"=list={a.list}",
                        f"=address={dst}",
                        f"=timeout={a.timeout}",
                        f"=comment={comment}",
                    )
                )
                added += 1
            except TrapError:
                already += 1
    seconds = time.perf_counter() - started
    api.close()
    json.dump(
        {
            "candidates": candidates,
            "added": added,
            "already": already,
            "seconds": seconds,
            "find_seconds": find_seconds,
            "maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        },
        sys.stdout,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
