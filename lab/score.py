"""`lab/run score`: rosguard against the lab's real kernel conntrack, scored per class.

Builds rosguard and the conntrack bridge, brings the lab up, starts the bridge on the
router namespace (its conntrack served as the simulator's connection tables, the block list
mirrored into the router's nftables), installs `rosguard firewall` rules through the API,
runs `rosguard run` with default detection settings, runs every traffic class, then checks
that a blocked destination is unreachable while normal traffic flows on. Writes into the
work directory: labels.json, trace.jsonl (every kernel row of every poll, RouterOS names),
events.jsonl (the bridge's block events), rosguard.log, scorecard.json and scorecard.md. With
--record: no daemon, only `rosguard record` over the traffic, into lab.rec.

It deliberately judges nothing itself beyond comparing what happened with the labels.
"""

import json
import os
import subprocess
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path

# The lab module: the running `lab.py` itself (one LabError class, one set of constants).
L = sys.modules["__main__"] if hasattr(sys.modules["__main__"], "Lab") else __import__("lab")

DEFAULT_PORTS = {443, 80, 8443}


def build(args):
    target = Path(os.environ.get("CARGO_TARGET_DIR", L.REPO / "target")) / "debug"
    if not args.no_build:
        for argv in (["cargo", "build", "-q", "-p", "rosguard"],
                     ["cargo", "build", "-q", "-p", "routeros-sim", "--example", "conntrack_bridge"]):
            p = subprocess.run(argv, cwd=L.REPO)
            if p.returncode != 0:
                raise L.LabError(f"{' '.join(argv)} failed")
    rosguard, bridge = target / "rosguard", target / "examples" / "conntrack_bridge"
    for b in (rosguard, bridge):
        if not b.exists():
            raise L.LabError(f"{b} is missing; build without --no-build")
    return str(rosguard), str(bridge)


# README's recommended settings (the "2 recommended" keys of the config reference).
RECOMMENDED = """
[detection]
min_observations = 2
min_flagged_connections = 2

[blocking]
escalation_factor = 2
"""


def config(work, addr, settings="default"):
    """Default detection and blocking (or the README's recommended keys); only the router, the
    state and the log level are set besides."""
    cfg = work / "rosguard.toml"
    extra = RECOMMENDED if settings == "recommended" else ""
    cfg.write_text(f"""# The lab's rosguard: every detection and blocking key at its default{
        " except the README's recommended ones" if extra else ""}.
[daemon]
state_dir = "{work / 'state'}"
log_level = "info"
{extra}

[[router]]
name = "lab"
address = "{addr}"
username = "admin"
password_env = "LAB_ROUTER_PASSWORD"
""")
    return cfg


def row_key(r):
    return (r["protocol"], r["src-address"], r.get("src-port"), r["dst-address"], r.get("dst-port"))


def class_matchers(cl):
    """Which kernel rows belong to a class: exact 5-tuples where the client reported them,
    else (protocol, source host, destination) for the scans and pings."""
    exact, loose = set(), []
    for f in cl["flows"]:
        if f.get("sport"):
            exact.add((f["protocol"], f["src"], str(f["sport"]), f["dst"], str(f["dport"])))
        else:
            loose.append((f["protocol"], None, f["dst"]))
    for p in cl["processes"]:
        if p["argv"] and p["argv"][0] == "nmap":
            host = L.LAN_HOSTS.get(p["host"]) or (L.ATTACKER if p["host"] == "atk" else ())
            loose.append(("tcp", set(host), p["argv"][-1]))
    return exact, loose


def matches(r, exact, loose):
    if row_key(r) in exact:
        return True
    for proto, srcs, dst in loose:
        if r["protocol"] == proto and r["dst-address"] == dst and (srcs is None or r["src-address"] in srcs):
            return True
    return False


def summarize_rows(rows_by_id):
    """Per kernel entry: the last sighting (counters only grow), the states it went
    through, and whether the default counter rule (orig > 3, repl <= 2, tcp/udp, port 443,
    80 or 8443) would flag it at any poll."""
    out = []
    for rid, seq in rows_by_id.items():
        last = seq[-1]
        states = []
        for r in seq:
            s = r.get("tcp-state")
            if s and (not states or states[-1] != s):
                states.append(s)
        flagged = [r for r in seq if r["protocol"] in ("tcp", "udp") and int(r.get("dst-port", 0)) in DEFAULT_PORTS
                   and int(r["orig-packets"]) > 3 and int(r["repl-packets"]) <= 2]
        out.append({
            ".id": rid, "protocol": last["protocol"],
            "src": last["src-address"] + (f":{last['src-port']}" if last.get("src-port") else ""),
            "dst": last["dst-address"] + (f":{last['dst-port']}" if last.get("dst-port") else ""),
            "orig-packets": int(last["orig-packets"]), "repl-packets": int(last["repl-packets"]),
            "orig-bytes": int(last["orig-bytes"]), "repl-bytes": int(last["repl-bytes"]),
            "tcp-states": states, "seen-reply": last["seen-reply"], "assured": last["assured"],
            "srcnat": last["srcnat"], "last-timeout": last["timeout"],
            "first-seen": seq[0]["t"], "last-seen": last["t"],
            "counter-rule-flags": bool(flagged),
            "first-flaggable": flagged[0]["t"] if flagged else None,
            "at-first-flag": ({k: flagged[0].get(k) for k in ("orig-packets", "repl-packets", "tcp-state")}
                              if flagged else None),
        })
    return out


def compact(rows):
    """One line per class: counter ranges and states, for the markdown table."""
    if not rows:
        return "no rows"
    def rng(k):
        lo, hi = min(r[k] for r in rows), max(r[k] for r in rows)
        return f"{lo}" if lo == hi else f"{lo}-{hi}"
    states = sorted({" > ".join(r["tcp-states"]) for r in rows if r["tcp-states"]})
    unrepl = sum(1 for r in rows if r["seen-reply"] == "false")
    s = f"{len(rows)} rows; orig {rng('orig-packets')}, repl {rng('repl-packets')}"
    first = [r["at-first-flag"] for r in rows if r["at-first-flag"]]
    if first:
        s += (f" (when first flaggable: orig {min(int(f['orig-packets']) for f in first)}-"
              f"{max(int(f['orig-packets']) for f in first)}, repl "
              f"{max(int(f['repl-packets']) for f in first)})")
    if states:
        s += "; " + ", ".join(states)
    if unrepl:
        s += f"; {unrepl} unreplied"
    return s


def cmd_score(args):
    rosguard, bridge_bin = build(args)
    work = L.new_workdir(args.out)
    events = []
    with L.Lab(work) as lab:
        lab.build()
        lab.servers()
        # The simulator's router knows the lab's DNS servers and IPv6 gateway (its addresses and
        # IPv4 gateway are its defaults), so rosguard's protections see the lab's router.
        bridge, line = lab.start("bridge", None, [
            bridge_bin, "--netns", lab.ns["router"], "--mirror-nft", "--trace", str(work / "trace.jsonl"),
            "--dns-server", L.v4(L.SERVERS["dns"]), "--dns-server", L.v6(L.SERVERS["dns"]),
            "--ipv6-gateway", L.GATEWAY[1]], ready_line="listening")
        addr = line.split()[1]

        def read_events():
            with open(work / "events.jsonl", "w") as f:
                for ln in bridge.stdout:
                    f.write(ln)
                    f.flush()
                    try:
                        events.append(json.loads(ln))
                    except json.JSONDecodeError:
                        pass

        threading.Thread(target=read_events, daemon=True).start()
        cfg = config(work, addr, args.settings)
        env = dict(os.environ, LAB_ROUTER_PASSWORD="", NO_COLOR="1")
        if args.record:
            record(lab, work, rosguard, cfg, env, args)
            return
        p = subprocess.run([rosguard, "firewall", "-c", str(cfg), "--install"], env=env,
                           capture_output=True, text=True, timeout=60)
        if p.returncode != 0:
            raise L.LabError(f"rosguard firewall --install: {p.stderr}")
        (work / "firewall.txt").write_text(p.stdout + p.stderr)
        deadline = time.monotonic() + 10
        while not any(e.get("event") == "rules" for e in events):
            if time.monotonic() > deadline:
                raise L.LabError(f"the bridge mirrored no drop rules within 10 s; see {work / 'events.jsonl'}")
            time.sleep(0.1)
        log = open(work / "rosguard.log", "w")
        daemon = subprocess.Popen([rosguard, "run", "-c", str(cfg)], env=env, stdout=log, stderr=log,
                                  start_new_session=True)
        lab.procs.append(("rosguard", daemon))
        t_daemon = time.time()
        # Traffic starts once the daemon has completed a cycle (its state store counts them),
        # so the times to block measure detection, not start-up.
        wait_first_cycle(rosguard, cfg, env, daemon)

        classes = L.run_traffic(lab, args.idle, None)
        # Three of rosguard's default 2 s cycles for the last flows to be seen.
        time.sleep(6)
        enforcement = enforcement_check(lab)
        (work / "labels.json").write_text(json.dumps(L.labels_doc(lab, classes), indent=2))

    card = scorecard(work, classes, events, t_daemon, enforcement)
    card["settings"] = args.settings
    (work / "scorecard.json").write_text(json.dumps(card, indent=2))
    (work / "scorecard.md").write_text(markdown(card))
    print(markdown(card))
    print(f"lab: results in {work}", file=sys.stderr)


def record(lab, work, rosguard, cfg, env, args):
    """`--record`: no daemon and no blocks, only `rosguard record` over the whole traffic, so
    the recording holds every flow as the kernel counted it (lab.rec, for `rosguard replay`)."""
    out = work / "lab.rec"
    log = open(work / "record.log", "w")
    rec = subprocess.Popen([rosguard, "record", "-c", str(cfg), "--duration", "1h", "-o", str(out)],
                           env=env, stdout=log, stderr=log, start_new_session=True)
    lab.procs.append(("recorder", rec))
    # The header is written before the first poll: wait for the file to grow past it.
    deadline = time.monotonic() + 30
    first = None
    while True:
        if rec.poll() is not None:
            raise L.LabError(f"rosguard record exited; see {work / 'record.log'}")
        size = out.stat().st_size if out.exists() else 0
        if first is None and size > 0:
            first = size
        if first is not None and size > first:
            break
        if time.monotonic() > deadline:
            raise L.LabError("rosguard record wrote no poll within 30 s")
        time.sleep(0.1)
    classes = L.run_traffic(lab, args.idle, None)
    time.sleep(6)
    rec.terminate()
    rec.wait(timeout=30)
    (work / "labels.json").write_text(json.dumps(L.labels_doc(lab, classes), indent=2))
    print(f"lab: recording in {out}", file=sys.stderr)


def wait_first_cycle(rosguard, cfg, env, daemon, limit=30):
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if daemon.poll() is not None:
            raise L.LabError("rosguard run exited; see rosguard.log")
        p = subprocess.run([rosguard, "stats", "-c", str(cfg), "--json"], env=env,
                           capture_output=True, text=True, timeout=30)
        try:
            doc = json.loads(p.stdout)
            routers = doc if isinstance(doc, list) else doc.get("routers", [doc])
            if any(r.get("history", {}).get("cycles", 0) >= 1 for r in routers):
                return
        except (json.JSONDecodeError, AttributeError):
            pass
        time.sleep(0.2)
    raise L.LabError(f"rosguard completed no cycle within {limit} s; see rosguard.log")


def enforcement_check(lab):
    """After the run: is a blocked destination unreachable, does normal traffic flow?"""
    out = {}
    for name, dst in [("blocked destination (sni server, normal SNI)", L.v4(L.SERVERS["sni"])),
                      ("blocked destination IPv6 (sni server, normal SNI)", L.v6(L.SERVERS["sni"])),
                      ("normal destination (web)", L.v4(L.SERVERS["web"])),
                      ("normal destination IPv6 (web)", L.v6(L.SERVERS["web"]))]:
        p = lab.sh("lan1", [L.PY, L.HOSTS, "fetch", "--dst", dst, "--timeout", "3"], check=False)
        try:
            ok = json.loads(p.stdout).get("ok")
        except json.JSONDecodeError:
            ok = False
        out[name] = {"dst": dst, "reachable": bool(ok)}
    return out


def scorecard(work, classes, events, t_daemon, enforcement):
    rows_by_id = defaultdict(list)
    with open(work / "trace.jsonl") as f:
        for ln in f:
            r = json.loads(ln)
            rows_by_id[r[".id"]].append(r)
    blocked = {}
    for e in events:
        if e.get("event") == "blocked" and e["address"] not in blocked:
            blocked[e["address"]] = e
    result = {"daemon_started": t_daemon, "enforcement": enforcement, "blocked": blocked, "classes": []}
    for cl in classes:
        exact, loose = class_matchers(cl)
        mine = {rid: seq for rid, seq in rows_by_id.items() if matches(seq[-1], exact, loose)}
        rows = summarize_rows(mine)
        firsts = [r["first-flaggable"] for r in rows if r["first-flaggable"]]
        flaggable_after = round(min(firsts) - cl["started"], 1) if firsts else None
        # The clients of ~30 processes start at once on a small machine: times are also
        # given from the class's first kernel row, which excludes their start-up.
        first_row = min((r["first-seen"] for r in rows), default=None)
        verdicts = {}
        for a in cl["block"] + cl["spare"]:
            b = blocked.get(a)
            verdicts[a] = {
                "should": "blocked" if a in cl["block"] else "spared",
                "got": "blocked" if b else "spared",
                "seconds_after_class_start": round(b["t"] - cl["started"], 1) if b else None,
                "seconds_after_first_row": round(b["t"] - first_row, 1) if b and first_row else None,
                "comment": b.get("comment") if b else None,
            }
        ok = all(v["should"] == v["got"] for v in verdicts.values())
        result["classes"].append({
            "class": cl["class"], "expected": cl["expected"], "description": cl["description"],
            "correct": ok, "verdicts": verdicts, "counter_rule_true_after": flaggable_after,
            "counter_rule_true_after_first_row": round(min(firsts) - first_row, 1) if firsts else None, "rows": rows, "summary": compact(rows),
            "client_ok": all(p.get("ok", p["exit"] == 0) for p in cl["processes"]),
        })
    known = {a for cl in classes for a in cl["block"] + cl["spare"]}
    result["other_blocks"] = {a: e for a, e in blocked.items() if a not in known}
    return result


def markdown(card):
    lines = ["| class | expected | verdict | correct | counter rule true after (first row) | "
             "time to block (from first row) | kernel rows (orig/repl packets at last sight, tcp-states) |",
             "|---|---|---|---|---|---|---|"]
    for c in card["classes"]:
        got = [f"{a} {v['got']}" for a, v in c["verdicts"].items() if v["got"] == "blocked"]
        times = [f"{v['seconds_after_class_start']} s ({v['seconds_after_first_row']} s)"
                 for v in c["verdicts"].values() if v["got"] == "blocked"]
        rule = (f"{c['counter_rule_true_after']} s ({c['counter_rule_true_after_first_row']} s)"
                if c["counter_rule_true_after"] is not None else "-")
        lines.append(f"| {c['class']} | {c['expected']} | {'; '.join(got) or 'nothing blocked'} | "
                     f"{'yes' if c['correct'] else 'NO'} | {rule} | "
                     f"{', '.join(times) or '-'} | {c['summary']} |")
    lines.append("")
    lines.append("Enforcement after the run:")
    for k, v in card["enforcement"].items():
        lines.append(f"- {k} {v['dst']}: {'reachable' if v['reachable'] else 'unreachable'}")
    if card["other_blocks"]:
        lines.append("")
        lines.append("Blocked addresses no class names: " + ", ".join(card["other_blocks"]))
    return "\n".join(lines) + "\n"
