"""Prints both connection tables with librouteros, as an operator's Python script would.

Part of rosguard-bench: it connects to the simulator, prints /ip/firewall/connection and
/ipv6/firewall/connection with the same .proplist rosguard asks for, counts the rows and reports
on stdout, as JSON, the row count and the time the prints took (after login). It deliberately
does nothing with the rows beyond counting them: librouteros already holds each reply whole
(it reads every row before it hands over the first), and that is what is being measured.
"""

import argparse
import json
import resource
import sys
import time

from librouteros import connect
from librouteros.query import Key


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--user", default="admin")
    p.add_argument("--password", default="")
    p.add_argument("--proplist", required=True, help="comma-separated property names")
    a = p.parse_args()

    api = connect(host=a.host, port=a.port, username=a.user, password=a.password, timeout=600)
    keys = [Key(name) for name in a.proplist.split(",") if name]
    started = time.perf_counter()
    rows = 0
    for family in ("ip", "ipv6"):
        for _row in api.path(family, "firewall", "connection").select(*keys):
            rows += 1
    seconds = time.perf_counter() - started
    api.close()
    json.dump(
        {
            "rows": rows,
            "seconds": seconds,
            "maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        },
        sys.stdout,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
