"""`splitrt hil --hosts FILE`: the live run of tools/hil/runner.py with its processes on other machines.

`HostsExperiment` is the one-machine `Experiment` with the places changed, nothing else: the same
`splitrt serve` / `splitrt vehicle` argv (each host's Python, its paths, its per-host threads,
provider and speed factor, and the CURVE flags), the same broker (embedded here, listening on
every interface, or ``--broker``), the same slot loop, controller and records. Before the first
method (`start`), in this order, each step stopping the run with an error naming the host:

1. **connect** to every host (tools/hosts/ssh.py) and remove the run directories a killed run of
   this machine left on it;
2. **check** it (tools/hosts/checks.py): same splitrt version and sources as here, the device verbs
   import with torch blocked, the provider asked for, free node ports, disk;
3. **clock**: each host's offset against this machine; a host beyond ``max_clock_offset_s`` stops
   the run unless ``ignore_clock`` (the offsets and their spread go into the report);
4. **ship** (tools/hosts/ship.py) what each host's roles need, verified by digest: the exports of
   its models and the learned policies into ``WORKDIR/cache`` (kept: a warm run sends nothing),
   this run's profiles into ``WORKDIR/runs/RUN``; per method, the work table and the CVs' traces;
5. **keys**: every node and vehicle makes its CURVE key pair on its own host
   (`splitrt keys`, in the run directory); only the public keys travel (nodes' to the CVs, CVs'
   to the nodes' ``--allow`` folders), so no secret key leaves the host that made it.

After each method its files come back (records, journals, stats, logs) into ``OUT/<method>``.
A host whose SSH session drops mid-run is recorded as a ``host_lost`` fault; the others go on
(the vehicles fall back to local when a node is gone); the tasks of a lost vehicle host are taken
from its telemetry, and every task it did not report is recorded as failed with the reason, so
``generated == completed + failed`` still holds. `close` stops every remote process and removes the
run directory from every host; processes on a host the orchestrator can no longer reach end with
their SSH session (SIGHUP), and their run directory is removed by the next run from this machine.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import posixpath
import shlex
import socket
import threading
import time
from pathlib import Path
from typing import Any

from splitrt.edge_runtime.errors import SplitrtError
from splitrt.edge_runtime.formats.records import read_jsonl
from splitrt.edge_runtime.vehicle.journal import DURATION_KEYS
from splitrt.tools.hil.faults import FaultLog
from splitrt.tools.hil.linkem import WIRE_BYTES_PER_PAYLOAD_BYTE, payload_rate_to_wire
from splitrt.tools.hil.runner import Experiment
from splitrt.tools.hosts import checks, probe
from splitrt.tools.hosts.inventory import Host, Inventory, check_roles
from splitrt.tools.hosts.shaping import HostShaper
from splitrt.tools.hosts.ship import ShipStats, manifest, ship
from splitrt.tools.hosts.ssh import ClockOffset, Connection, clock_offset

LOST_REASON = "host lost"
LINK_MODES = ("measured", "tc")
#: Link rates of slot t are sent to the hosts this long before its boundary (an SSH round trip
#: and a tc call per link; `update_s` in tc_rates.jsonl says how long each update took).
TC_LEAD_S = 0.05


def default_clock_limit_s(slot_s: float) -> float:
    """The largest clock offset a run accepts: 5% of a slot (a CV that far off starts its tasks
    5% of a slot early or late against the node's allocation and the orchestrator's link updates)."""
    return 0.05 * slot_s


class HostsExperiment(Experiment):
    """The live run on the inventory's hosts (module docstring)."""

    def __init__(
        self,
        plan,
        out_dir: Path,
        inventory: Inventory,
        *,
        policies: list[Path] = (),
        max_clock_offset_s: float | None = None,
        ignore_clock: bool = False,
        links: str = "measured",
        **kwargs: Any,
    ) -> None:
        if links not in LINK_MODES:
            raise SplitrtError(f"--links must be one of {', '.join(LINK_MODES)}, got {links!r}")
        kwargs["netns"] = False
        super().__init__(plan, out_dir, **kwargs)
        self.broker_public = True
        self.inventory = inventory
        self.policy_dirs = [Path(p).resolve() for p in policies]
        self.max_clock_offset_s = (
            max_clock_offset_s if max_clock_offset_s is not None else default_clock_limit_s(plan.scenario.slot_s)
        )
        self.ignore_clock = ignore_clock
        self.run_id = f"{socket.gethostname()}-{os.getpid()}-{int(time.time())}"
        self.conns: dict[str, Connection] = {}
        self.facts: dict[str, dict[str, Any]] = {}
        self.offsets: dict[str, ClockOffset] = {}
        self.shipping: dict[str, ShipStats] = {}
        self.lost: dict[str, float] = {}  # host -> unix time its SSH session was seen gone
        self.links = links
        self.link_emulation = links
        self.shapers: dict[str, HostShaper] = {}
        self.tc_lead_s = TC_LEAD_S
        self._watch_stop = threading.Event()
        self._watcher: threading.Thread | None = None
        self._epoch = float("nan")
        self._ports = {role: port for h in inventory.hosts for role, port in checks.node_ports(h).items()}

    # ---- places ----------------------------------------------------------------------------------
    def host(self, role: str) -> Host:
        return self.inventory.host_of(role)

    def run_dir(self, host: Host) -> str:
        return posixpath.join(host.workdir, "runs", self.run_id)

    def cache_dir(self, host: Host) -> str:
        return posixpath.join(host.workdir, "cache")

    def _path(self, name: str, local: Path) -> str:
        host = self.host(name)
        local = Path(local).resolve()
        roots = [(self.plan.exports.resolve(), posixpath.join(self.cache_dir(host), "exports"))]
        roots += [(d, posixpath.join(self.cache_dir(host), "policies", d.name)) for d in self.policy_dirs]
        roots.append((self.out_dir.resolve(), self.run_dir(host)))
        for root, remote in roots:
            if local == root or root in local.parents:
                return posixpath.join(remote, *local.relative_to(root).parts)
        raise SplitrtError(
            f"{local} has no place on host {host.name} (not under the exports, a policy or {self.out_dir})"
        )

    def _cli(self, name: str) -> list[str]:
        return [self.host(name).python, "-m", "splitrt.tools.cli.main", "--log-level", "INFO"]

    def _bind(self, name: str, ports: dict[str, int]) -> str:
        return f"tcp://0.0.0.0:{self._ports[name]}"

    def _node_endpoint(self, cv: str, node: str, ports: dict[str, int]) -> str:
        return f"tcp://{self.host(node).address}:{self._ports[node]}"

    def _broker_for(self, ns: str | None) -> str:
        if self.broker_url:
            return self.broker_url
        if ns is None:
            return f"mqtt://127.0.0.1:{self._broker_port}"
        host = self.host(ns)
        address = self.inventory.orchestrator_address or self.conns[host.name].local_address
        return f"mqtt://{address}:{self._broker_port}"

    def _decider(self, name: str, decider: str) -> str:
        if decider.startswith("policy:"):
            return "policy:" + self._path(name, Path(decider[len("policy:") :]))
        return decider

    def _tune(self, name: str, config: Any) -> Any:
        host = self.host(name)
        changes: dict[str, Any] = {}
        if host.threads is not None:
            changes["threads"] = host.threads
        if host.provider is not None:
            changes["providers"] = (host.provider,)
        if host.speed_factor is not None:
            changes["speed_factor"] = host.speed_factor
        return dataclasses.replace(config, **changes) if changes else config

    def _security_args(self, name: str) -> list[str]:
        keys = posixpath.join(self.run_dir(self.host(name)), "keys")
        secret = ["--curve-secret", posixpath.join(keys, f"{name}.key_secret")]
        if name.startswith("cv"):
            return [
                *secret,
                *[
                    a
                    for n in self.plan.node_names
                    for a in ("--server-key", posixpath.join(keys, "servers", f"{n}.key"))
                ],
            ]
        return [*secret, "--allow", posixpath.join(keys, "allow")]

    # ---- set-up ------------------------------------------------------------------------------
    def start(self) -> None:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        roles = ["rsu", *[s.name for s in self.plan.svs], *[c.id for c in self.plan.cvs]]
        check_roles(self.inventory, roles)
        if self.links == "tc":
            crowded = [h.name for h in self.inventory.hosts if sum(r.startswith("cv") for r in h.roles) > 1]
            if crowded:
                raise SplitrtError(
                    f"--links tc: host {crowded[0]} runs several CVs, whose links tc cannot tell apart; "
                    "give each CV its own host or use --links measured"
                )
        self.say(f"hosts: connecting to {len(self.inventory.hosts)} host(s)")
        for h in self.inventory.hosts:
            self.conns[h.name] = Connection(h)
        self._remove_stale_runs()
        self._check_hosts()
        self._measure_clocks()
        super().start()
        started = time.perf_counter()
        self._ship_static()
        self.ship_s = time.perf_counter() - started
        started = time.perf_counter()
        self._make_keys()
        self.keys_s = time.perf_counter() - started
        if self.links == "tc":
            self._start_shaping()
            self.link_note = (
                f"{len(self.inventory.hosts)} hosts over SSH ({self.inventory.path.name}); links shaped per slot by tc "
                f"(htb) on the hosts' interfaces ({', '.join(f'{n} {s.interface}' for n, s in self.shapers.items())}), "
                f"payload rate x {WIRE_BYTES_PER_PAYLOAD_BYTE:.4f} for Ethernet/IP/TCP headers"
            )
        else:
            self.link_note = (
                f"{len(self.inventory.hosts)} hosts over SSH ({self.inventory.path.name}); links measured: not shaped, "
                "the simulator uses the rates the vehicles measured per slot"
            )
        self._watcher = threading.Thread(target=self._watch, name="hosts-watch", daemon=True)
        self._watcher.start()
        self._write_hosts()

    def _remove_stale_runs(self) -> None:
        """Run directories a killed run of this machine left (its pid is gone) are removed."""
        import psutil

        prefix = f"{socket.gethostname()}-"
        for h in self.inventory.hosts:
            conn = self.conns[h.name]
            try:
                names = conn.sftp.listdir(posixpath.join(h.workdir, "runs"))
            except (OSError, FileNotFoundError):
                continue
            stale = []
            for n in names:
                parts = n[len(prefix) :].split("-")
                if n.startswith(prefix) and parts[0].isdigit() and not psutil.pid_exists(int(parts[0])):
                    stale.append(posixpath.join(h.workdir, "runs", n))
            if stale:
                conn.check("rm -rf " + " ".join(shlex.quote(s) for s in stale), "removing stale run directories")
                self.say(f"host {h.name}: removed {len(stale)} run directory(ies) a killed run left")

    def _check_hosts(self) -> None:
        local = probe.splitrt_identity()
        problems = []
        for h in self.inventory.hosts:
            facts = checks.probe_host(self.conns[h.name])
            self.facts[h.name] = facts
            verdict = checks.judge(
                h, facts, local, need_tc=self.links == "tc", need_bytes=sum(e.size for e in self._static_entries(h))
            )
            problems += [f"host {h.name}: {p}" for p in verdict.problems]
        if problems:
            raise SplitrtError("; ".join(problems))

    def _measure_clocks(self) -> None:
        for h in self.inventory.hosts:
            self.offsets[h.name] = clock_offset(self.conns[h.name])
        offs = [o.offset_s for o in self.offsets.values()]
        self.clock_spread_s = max(offs) - min(offs)
        worst = max(self.offsets.values(), key=lambda o: abs(o.offset_s))
        self.say(
            f"clocks: offsets {', '.join(f'{o.host} {o.offset_s * 1e3:+.2f} ms' for o in self.offsets.values())}; "
            f"spread {self.clock_spread_s * 1e3:.2f} ms"
        )
        if abs(worst.offset_s) > self.max_clock_offset_s:
            text = (
                f"host {worst.host}: clock offset {worst.offset_s * 1e3:+.1f} ms exceeds "
                f"{self.max_clock_offset_s * 1e3:.1f} ms (5% of the slot; sync the clocks, e.g. chrony, or --ignore-clock)"
            )
            if not self.ignore_clock:
                raise SplitrtError(text)
            self.say(f"warning: {text}; going on (--ignore-clock)")

    def _start_shaping(self) -> None:
        """One HostShaper per host, every link leaving it at slot 0's rate (tools/hosts/shaping.py)."""
        rates = self._wire_rates(0)
        for h in self.inventory.hosts:
            links: dict[str, tuple[int, str]] = {}
            peer = None
            for role in h.roles:
                if role.startswith("cv"):
                    for n in self.plan.node_names:
                        peer = self.host(n).address
                        match = f"match ip dst {peer}/32 match ip dport {self._ports[n]} 0xffff"
                        links[f"{role}-{n}"] = (10 + len(links), match)
                else:
                    for cv in self.plan.cvs:
                        peer = self.host(cv.id).address
                        match = f"match ip dst {peer}/32 match ip sport {self._ports[role]} 0xffff"
                        links[f"{role}-{cv.id}"] = (10 + len(links), match)
            interface = h.interface or self._interface_to(h, peer)
            self.shapers[h.name] = HostShaper(self.conns[h.name], interface, links, rates)

    def _interface_to(self, h: Host, peer: str | None) -> str:
        out = self.conns[h.name].check(f"ip -o route get {shlex.quote(str(peer))}", "finding the interface for tc")
        words = out.split()
        if "dev" not in words:
            raise SplitrtError(f"host {h.name}: no route to {peer} ({out.strip()}); set its interface in the inventory")
        return words[words.index("dev") + 1]

    def _wire_rates(self, slot: int) -> dict[str, float]:
        """Every directed link's wire rate in ``slot``: ``cv-node`` (uplink) and ``node-cv`` (results)."""
        rates = {}
        for i, cv in enumerate(self.plan.cvs):
            for j, node in enumerate(self.plan.node_names):
                r = payload_rate_to_wire(float(self.plan.rates_bps[slot, i, j]))
                rates[f"{cv.id}-{node}"] = rates[f"{node}-{cv.id}"] = r
        return rates

    def _shaping(self) -> bool:
        return bool(self.shapers)

    def _set_rates(self, slot: int, log_path: Path) -> float:
        start = time.perf_counter()
        rates = self._wire_rates(slot)
        for name, shaper in self.shapers.items():
            if name not in self.lost:
                with contextlib.suppress(SplitrtError, OSError, EOFError):  # a host lost mid-update
                    shaper.set_rates({k: rates[k] for k in shaper.links})
        elapsed = time.perf_counter() - start
        applied = {k: v for s in self.shapers.values() for k, v in s.rates_bps.items() if k.startswith("cv")}
        with log_path.open("a") as f:
            f.write(json.dumps({"slot": slot, "unix_s": time.time(), "wire_bps": applied, "update_s": elapsed}) + "\n")
        return elapsed

    def _static_entries(self, h: Host):
        """What ``h``'s roles need for the whole run: exports, profiles, policies."""
        models = set()
        for role in h.roles:
            if role.startswith("cv"):
                models.add(next(c.model for c in self.plan.cvs if c.id == role))
            else:
                models.update(self.plan.scenario.types)
        some = h.roles[0]
        items = [(self.plan.exports / m, self._path(some, self.plan.exports / m)) for m in sorted(models)]
        items.append((self.plan.profile_dir, self._path(some, self.plan.profile_dir)))
        if any(r.startswith("cv") for r in h.roles):
            items += [(d, self._path(some, d)) for d in self.policy_dirs]
        return manifest(items)

    def _ship_static(self) -> None:
        for h in self.inventory.hosts:
            stats = ship(self.conns[h.name], self._static_entries(h))
            self.shipping[h.name] = stats
            self.say(
                f"host {h.name}: {stats.files} files verified, {stats.sent} sent ({stats.bytes_sent / 1e6:.1f} MB), "
                f"{stats.skipped} already there, {stats.seconds:.1f} s"
            )

    def _make_keys(self) -> None:
        public: dict[str, bytes] = {}
        for h in self.inventory.hosts:
            conn = self.conns[h.name]
            keys = posixpath.join(self.run_dir(h), "keys")
            for role in h.roles:
                conn.check(
                    f"{shlex.quote(h.python)} -m splitrt.tools.cli.main keys --out {shlex.quote(keys)} --name {role} --force",
                    f"making {role}'s key pair",
                )
                data = conn.read_bytes(posixpath.join(keys, f"{role}.key"))
                if not data:
                    raise SplitrtError(f"host {h.name}: {role}'s public key was not made")
                public[role] = data
        for h in self.inventory.hosts:
            conn = self.conns[h.name]
            keys = posixpath.join(self.run_dir(h), "keys")
            conn.check(f"mkdir -p {shlex.quote(keys)}/servers {shlex.quote(keys)}/allow", "making the key folders")
            for role in h.roles:
                peers = self.plan.node_names if role.startswith("cv") else [c.id for c in self.plan.cvs]
                folder = "servers" if role.startswith("cv") else "allow"
                for peer in peers:
                    with conn.sftp.open(posixpath.join(keys, folder, f"{peer}.key"), "wb") as f:
                        f.write(public[peer])

    # ---- per method --------------------------------------------------------------------------
    def _prepare_method(self, mdir: Path) -> None:
        for h in self.inventory.hosts:
            conn = self.conns[h.name]
            if h.name in self.lost:
                continue
            remote = self._path(h.roles[0], mdir)
            conn.check(f"rm -rf {shlex.quote(remote)}", "clearing the method's folder")
            items = [(mdir / "work.json", self._path(h.roles[0], mdir / "work.json"))]
            for role in h.roles:
                if role.startswith("cv"):
                    trace = mdir / "traces" / f"{role}.json"
                    items.append((trace, self._path(role, trace)))
            self.shipping[h.name].add(ship(conn, manifest(items)))

    def _drive(self, method, clock, *args, **kwargs):
        self._epoch = clock.epoch_unix_s
        return super()._drive(method, clock, *args, **kwargs)

    def _await_vehicles(self, vehicles) -> None:
        alive = [v for v in vehicles if v.conn.host.name not in self.lost]
        deadline = time.monotonic() + max(60.0, 3 * self.plan.scenario.slots * self.plan.scenario.slot_s)
        for child in alive:
            code = child.wait(max(1.0, deadline - time.monotonic()))
            if child.lost():
                continue
            if code is None:
                raise SplitrtError(f"{child.name} on host {child.host} still running long after the last slot")
            if code != 0:
                raise SplitrtError(f"{child.name} on host {child.host} exited with {code}: {child.stderr_tail(800)}")

    def _gather_method(self, mdir: Path, exp: str) -> None:
        """Every host's files of the method back into ``mdir``; a lost host's vehicles from telemetry."""
        method = mdir.name
        faults = FaultLog(mdir / "faults.jsonl")
        for h in self.inventory.hosts:
            if h.name not in self.lost:
                try:
                    self.conns[h.name].get_tree(self._path(h.roles[0], mdir), mdir)
                    continue
                except (OSError, EOFError, SplitrtError):
                    self.lost.setdefault(h.name, time.time())
            when = self.lost[h.name]
            slot = int((when - self._epoch) // self.plan.scenario.slot_s) if math.isfinite(self._epoch) else None
            window = faults.start("host_lost", h.name, slot=slot, roles=list(h.roles), method=method)
            window.start_unix_s = when
            faults.end(window)
            for role in h.roles:
                if role.startswith("cv"):
                    self._recover_vehicle(mdir, role, h.name, slot)

    def _recover_vehicle(self, mdir: Path, cv: str, host: str, slot: int | None) -> None:
        """``cv``'s records from the telemetry its host sent, and a failed record for every task of
        the run it did not report (one task per slot: ids cv-0 .. cv-(T-1))."""
        path = mdir / "telemetry" / "task.jsonl"
        got = {}
        if path.is_file():
            for line in read_jsonl(path):
                msg = line.get("msg", {})
                if msg.get("vehicle_id") == cv:
                    rec = {k: v for k, v in msg.items() if k not in ("schema", "kind", "sent_at")}
                    got[rec["task_id"]] = rec
        now = time.time()
        sc = self.plan.scenario
        records = list(got.values())
        for i in range(sc.slots):
            task_id = f"{cv}-{i}"
            if task_id in got:
                continue
            arrival = self._epoch + i * sc.slot_s if math.isfinite(self._epoch) else now
            records.append(
                {
                    "task_id": task_id,
                    "vehicle_id": cv,
                    "index": i,
                    "slot": i,
                    "model": next(c.model for c in self.plan.cvs if c.id == cv),
                    "decider": None,
                    "cut": None,
                    "node": None,
                    "node_name": None,
                    "bytes": 0,
                    "outcome": "failed",
                    "reason": f"{LOST_REASON}: {host}" + (f" at slot {slot}" if slot is not None else ""),
                    "arrival_unix_s": arrival,
                    "completion_unix_s": max(now, arrival),
                    "total_s": max(now, arrival) - arrival,
                    **dict.fromkeys(DURATION_KEYS, 0.0),
                }
            )
        records.sort(key=lambda r: r["index"])
        with (mdir / f"{cv}.jsonl").open("w") as f:
            for r in records:
                f.write(json.dumps(r) + "\n")
        self.say(
            f"host {host} lost: {cv}'s {len(got)} reported task(s) taken from telemetry, {sc.slots - len(got)} failed"
        )

    def _watch(self) -> None:
        while not self._watch_stop.wait(0.2):
            for name, conn in self.conns.items():
                if name not in self.lost and not conn.alive:
                    self.lost[name] = time.time()
                    self.say(f"fault: host {name}'s SSH session is gone; its processes end with it, the others go on")

    def _spawn(self, name: str, cmd: list[str], logs: Path):
        h = self.host(name)
        if h.name in self.lost:
            raise SplitrtError(f"host {h.name} was lost earlier in this run: cannot start {name} there")
        child = self.conns[h.name].spawn(name, cmd, self.run_dir(h), logs)
        self.children.append(child)
        self._write_pids()
        return child

    def _cpu_seconds(self, children) -> float:
        return float("nan")  # the processes run on other machines

    def _write_pids(self) -> None:
        for c in self.children:
            self._pids[f"{getattr(c, 'host', 'local')}:{c.name}-{c.pid}"] = c.pid
        if self.broker is not None and self.broker.pid is not None:
            self._pids["broker"] = self.broker.pid
        data = {"pids": self._pids, "namespace_prefix": None, "run_id": self.run_id}
        self.pids_file.write_text(json.dumps(data, indent=1) + "\n")

    # ---- tear-down -------------------------------------------------------------------------------
    def close(self) -> None:
        self._watch_stop.set()
        super().close()
        for shaper in self.shapers.values():
            shaper.close()
        self.shapers.clear()
        for h in self.inventory.hosts:
            conn = self.conns.get(h.name)
            if conn is not None and conn.alive:
                with contextlib.suppress(SplitrtError):
                    conn.run(f"rm -rf {shlex.quote(self.run_dir(h))}", timeout_s=60)
        for conn in self.conns.values():
            conn.close()
        self.conns.clear()

    # ---- what the report shows ---------------------------------------------------------------
    def hosts_rows(self) -> list[dict[str, Any]]:
        rows = []
        for h in self.inventory.hosts:
            f = self.facts.get(h.name, {})
            o = self.offsets.get(h.name)
            s = self.shipping.get(h.name)
            rows.append(
                {
                    "host": h.name,
                    "address": h.where,
                    "roles": list(h.roles),
                    "machine": f.get("machine"),
                    "python": f.get("python"),
                    "splitrt": f.get("version"),
                    "onnxruntime": f.get("onnxruntime"),
                    "cpus": f.get("cpus"),
                    "clock_offset_s": o.offset_s if o else None,
                    "clock_rtt_s": o.rtt_s if o else None,
                    "shipping": s.as_dict() if s else None,
                    "lost_unix_s": self.lost.get(h.name),
                }
            )
        return rows

    def _write_hosts(self) -> None:
        data = {
            "inventory": str(self.inventory.path),
            "run_id": self.run_id,
            "max_clock_offset_s": self.max_clock_offset_s,
            "clock_spread_s": getattr(self, "clock_spread_s", None),
            "setup_ship_s": getattr(self, "ship_s", None),  # the static files, every host (one after another)
            "setup_keys_s": getattr(self, "keys_s", None),  # the CURVE key pairs made on the hosts
            "hosts": self.hosts_rows(),
        }
        (self.out_dir / "hosts.json").write_text(json.dumps(data, indent=1) + "\n")
