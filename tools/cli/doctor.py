"""Can these machines run an experiment? One row per host of an inventory (or this machine alone).

With ``--hosts FILE`` every host of the inventory (docs/deploy.md) is reached over SSH and probed
(tools/hosts/probe.py, sent over the connection: nothing is installed): reachable, Python, the
splitrt version (and whether its sources are this machine's), ONNX Runtime and its providers,
cores, memory, clock offset against this machine, free disk in its work directory, free node
ports, and whether tc is usable (root and the tc binary). The exit status is 1 when any host
cannot run its roles (the last column says why), else 0. Without ``--hosts``: this machine's row.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--hosts", type=Path, default=None, metavar="FILE", help="the inventory (TOML) to check")
    p.add_argument("--json", type=Path, default=None, metavar="FILE", help="also write the rows as JSON")
    p.add_argument("--tc", action="store_true", help="also require tc on every host (for --links tc)")


def main(args: argparse.Namespace) -> int:
    import time

    from splitrt.edge_runtime.errors import SplitrtError
    from splitrt.tools.hosts import checks, probe
    from splitrt.tools.hosts.inventory import Host, load_inventory

    local = probe.splitrt_identity()
    rows = []
    started = time.perf_counter()
    if args.hosts is None:
        me = Host(name="this machine", address="localhost", roles=("rsu",), key=Path("/"), workdir=str(Path.cwd()))
        facts = probe.facts(str(Path.cwd()), ())
        rows.append(_row(me, facts, None, checks.judge(me, facts, local, need_tc=args.tc).problems))
    else:
        from splitrt.tools.hosts.ssh import Connection, clock_offset

        inventory = load_inventory(args.hosts)
        for h in inventory.hosts:
            try:
                conn = Connection(h)
            except SplitrtError as exc:
                rows.append(_row(h, {}, None, [str(exc)], reachable=False))
                continue
            try:
                facts = checks.probe_host(conn)
                offset = clock_offset(conn)
                rows.append(_row(h, facts, offset, checks.judge(h, facts, local, need_tc=args.tc).problems))
            except SplitrtError as exc:
                rows.append(_row(h, {}, None, [str(exc)]))
            finally:
                conn.close()
    wall = time.perf_counter() - started
    table = [
        [
            "host",
            "reachable",
            "Python",
            "splitrt",
            "onnxruntime",
            "providers",
            "cores",
            "memory",
            "clock offset",
            "disk free",
            "tc",
            "problems",
        ]
    ]
    for r in rows:
        table.append(
            [
                r["host"],
                "yes" if r["reachable"] else "no",
                r["python"] or "-",
                r["splitrt"] or "-",
                r["onnxruntime"] or "-",
                ",".join(p.removesuffix("ExecutionProvider") for p in r["providers"]) or "-",
                str(r["cpus"] or "-"),
                "-" if r["memory_bytes"] is None else f"{r['memory_bytes'] / 2**30:.1f} GiB",
                "-" if r["clock_offset_s"] is None else f"{r['clock_offset_s'] * 1e3:+.2f} ms",
                "-" if r["disk_free_bytes"] is None else f"{r['disk_free_bytes'] / 2**30:.1f} GiB",
                "yes" if r["tc"] else "no",
                "; ".join(r["problems"]) or "ok",
            ]
        )
    from splitrt.tools.hil.report import text_table

    print(text_table(table))
    print(f"checked {len(rows)} host(s) in {wall:.1f} s")
    if args.json is not None:
        args.json.write_text(json.dumps({"wall_s": wall, "rows": rows}, indent=1) + "\n")
    return 1 if any(r["problems"] for r in rows) else 0


def _row(host, facts, offset, problems, reachable: bool = True) -> dict:
    return {
        "host": host.name,
        "address": host.where,
        "roles": list(host.roles),
        "reachable": reachable,
        "python": facts.get("python"),
        "splitrt": facts.get("version"),
        "same_sources": facts.get("source_digest") is not None,
        "onnxruntime": facts.get("onnxruntime"),
        "providers": facts.get("providers", []),
        "cpus": facts.get("cpus"),
        "memory_bytes": facts.get("memory_bytes"),
        "clock_offset_s": None if offset is None else offset.offset_s,
        "clock_rtt_s": None if offset is None else offset.rtt_s,
        "disk_free_bytes": facts.get("disk_free_bytes"),
        "tc": bool(facts.get("tc")),
        "problems": problems,
    }
