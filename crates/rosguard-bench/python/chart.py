"""Draws the benchmark chart from rosguard-bench's results.json.

Two panels over the connection-table size: rows per second of a full print (rosguard's cycle,
with the filter on the router and without, against librouteros printing the same table) and
the peak resident memory of each client process. Log scales: the sizes span 10k to 1M rows.
It deliberately reads only the medians the harness computed; it measures nothing.

usage: chart.py results.json out.png
"""

import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import FuncFormatter  # noqa: E402


def human(n: float, _pos=None) -> str:
    for unit, div in (("M", 1e6), ("k", 1e3)):
        if abs(n) >= div:
            v = n / div
            return f"{v:.0f}{unit}" if v >= 10 or v == int(v) else f"{v:.1f}{unit}"
    return f"{n:.0f}"


def series(tables, pick):
    xs, ys = [], []
    for t in tables:
        v = pick(t)
        if v:
            xs.append(t["size"])
            ys.append(v)
    return xs, ys


def main() -> int:
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    with open(sys.argv[1]) as f:
        res = json.load(f)
    tables = res["tables"]
    lr = res.get("python", {}).get("librouteros", "librouteros")

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.8), dpi=110)
    fig.suptitle(
        f"rosguard vs Python librouteros {lr}: one full read of the connection table "
        f"(simulator on loopback, {res['machine']['cpus']} cores)",
        fontsize=11,
    )

    lines = [
        ("rosguard, every row fetched", lambda t: t["full"]["rows_per_s"], "o-", "#1f77b4"),
        ("rosguard, filter on the router\n(table rows / cycle time)",
         lambda t: t["filtered"]["table_rows_per_s"], "s--", "#2ca02c"),
        (f"librouteros {lr}, every row", lambda t: (t.get("librouteros") or {}).get("rows_per_s"),
         "^-", "#d62728"),
    ]
    for label, pick, style, color in lines:
        xs, ys = series(tables, pick)
        if xs:
            ax1.plot(xs, ys, style, label=label, color=color)
            for x, y in zip(xs, ys):
                ax1.annotate(human(y), (x, y), textcoords="offset points", xytext=(0, 7),
                             ha="center", fontsize=8, color=color)
    ax1.set_xscale("log")
    ax1.set_yscale("log")
    ax1.set_xlabel("connections in the table")
    ax1.set_ylabel("rows per second (median)")
    ax1.set_title("Throughput", fontsize=10)

    mem = [
        ("rosguard (whole process)", lambda t: t["full"]["rss_mib"], "o-", "#1f77b4"),
        (f"librouteros {lr} (whole process)",
         lambda t: (t.get("librouteros") or {}).get("rss_mib"), "^-", "#d62728"),
    ]
    for label, pick, style, color in mem:
        xs, ys = series(tables, pick)
        if xs:
            ax2.plot(xs, ys, style, label=label, color=color)
            for x, y in zip(xs, ys):
                ax2.annotate(f"{y:.0f} MiB", (x, y), textcoords="offset points", xytext=(0, 7),
                             ha="center", fontsize=8, color=color)
    ax2.axhline(64, color="grey", linestyle=":", linewidth=1)
    ax2.annotate("64 MiB target", (tables[0]["size"], 64), textcoords="offset points",
                 xytext=(2, 4), fontsize=8, color="grey")
    ax2.set_xscale("log")
    ax2.set_yscale("log")
    ax2.set_xlabel("connections in the table")
    ax2.set_ylabel("peak RSS, MiB")
    ax2.set_title("Memory", fontsize=10)

    for ax in (ax1, ax2):
        ax.xaxis.set_major_formatter(FuncFormatter(human))
        ax.yaxis.set_major_formatter(FuncFormatter(human))
        ax.grid(True, which="major", alpha=0.3)
        ax.legend(fontsize=8, loc="best")
        ax.margins(x=0.12, y=0.15)
    fig.tight_layout()
    fig.savefig(sys.argv[2])
    return 0


if __name__ == "__main__":
    sys.exit(main())
