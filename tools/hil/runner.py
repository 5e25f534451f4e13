"""Run one method of a plan live: RSU, SVs and CVs as processes, emulated links, telemetry, controller.

`Experiment` holds what all methods of a run share and always tears it down (``close``, also on
Ctrl-C, SIGTERM or an exception; children die with the orchestrator even on SIGKILL, see
tools/processes.py, and namespaces a killed run left behind are removed by the next run):

- **Links.** As root with iproute2 (tools/hil/linkem.py) every node gets a network namespace (``rsu``,
  ``sv1``.., ``cv0``..); every CV-RSU and CV-SV pair a veth link whose rate is set at every slot
  boundary, in both directions, to the channel model's rate for that slot (the plan's rates,
  converted to the wire rate of that much TCP payload); every namespace an unshaped link to the
  root namespace, where the MQTT broker and this orchestrator live (telemetry is the control
  plane; tensors only cross the shaped links). Otherwise (not root, ``--no-netns``, or an external
  ``--broker`` that the namespaces could not reach) everything runs over plain loopback without
  rate shaping, and the report says so (``link_emulation``: ``tc`` or ``loopback``).
- **Broker.** An embedded one (tools/hil/broker.py: mosquitto, else amqtt) unless ``--broker``.

Per method (`Experiment.run`): a fresh experiment id; the recorder and the Lyapunov controller
subscribe; the nodes start (`splitrt serve`, waiting for the slot beacon), then the vehicles
(`splitrt vehicle`: warm-up, connect, then wait for the beacon); once all are ready the
orchestrator publishes the retained beacon with the epoch, sets each slot's link rates just
before its boundary and publishes the controller's online record of slot t once slot t + 1 has
begun; vehicles leave when their last task is done, then the nodes are stopped (SIGTERM: they
answer what they hold and write their stats).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from splitrt.edge_runtime.configfields import to_argv
from splitrt.edge_runtime.errors import SplitrtError
from splitrt.edge_runtime.experiment.clock import SlotClock
from splitrt.edge_runtime.experiment.controller import ControllerSetup, LyapunovController
from splitrt.edge_runtime.experiment.recorder import Recorder
from splitrt.edge_runtime.experiment.telemetry import Publisher
from splitrt.edge_runtime.formats.records import read_jsonl
from splitrt.edge_runtime.node.config import ServerConfig
from splitrt.edge_runtime.vehicle.config import VehicleConfig
from splitrt.edge_runtime.vehicle.journal import discard_run
from splitrt.tools.hil import linkem
from splitrt.tools.hil.broker import EmbeddedBroker, free_port, start_broker, sweep_stale_brokers
from splitrt.tools.hil.faults import FaultLog, FaultWindow, read_windows
from splitrt.tools.hil.plan import HilPlan, vehicle_seed
from splitrt.tools.processes import Child, cli_command

log = logging.getLogger(__name__)

NODE_PORT = 5555
START_TIMEOUT_S = 240.0
#: The epoch is set this far after every process reported ready.
START_LEAD_S = 0.5
#: Link rates of slot t are set this long before its boundary.
TC_LEAD_S = 0.02
#: Injected link faults start and end this fraction of a slot before their slot boundary.
FAULT_LEAD_FRACTION = 0.25
FAULTS = ("broker-kill", "crash", "blackout")


@dataclass
class LiveResult:
    """What one method's live run produced (files under ``out_dir``)."""

    method: str
    experiment: str
    out_dir: Path
    link_emulation: str
    link_note: str
    records: list[dict[str, Any]]
    controller: list[dict[str, Any]]
    controller_online: list[dict[str, Any]]
    vehicle_stats: dict[str, dict[str, Any]]
    node_stats: dict[str, dict[str, Any]]
    telemetry: dict[str, Any]
    epoch_unix_s: float
    wall_s: float
    cpu_s: float
    tc_update_s: list[float] = field(default_factory=list)
    faults: list[FaultWindow] = field(default_factory=list)  # the injected faults (faults.jsonl)


def parse_faults(specs: list[str]) -> dict[str, tuple[int, int]]:
    """``["broker-kill@10", "blackout@3:2"]`` -> {"broker-kill": (10, 0), "blackout": (3, 2)}
    (fault injection for tests): the slot the fault starts at, and for ``blackout`` how many slots
    it lasts."""
    out = {}
    for spec in specs:
        kind, _, when = spec.partition("@")
        slot, _, span = when.partition(":")
        if kind not in FAULTS or not slot.isdigit() or (kind == "blackout") != bool(span):
            raise SplitrtError(f"--fault {spec!r} must be broker-kill@SLOT, crash@SLOT or blackout@SLOT:SLOTS")
        if kind == "blackout" and not (span.isdigit() and int(span) >= 1 and int(slot) >= 1):
            raise SplitrtError(f"--fault {spec!r}: a blackout starts at slot 1 or later and lasts 1 slot or more")
        out[kind] = (int(slot), int(span or 0))
    return out


class Experiment:
    """Shared set-up of a live run (module docstring). Use as a context manager."""

    def __init__(
        self,
        plan: HilPlan,
        out_dir: Path,
        *,
        broker_url: str | None = None,
        netns: bool = True,
        broker_kind: str = "auto",
        say: Callable[[str], None] = print,
        progress: bool = True,
        faults: dict[str, tuple[int, int]] | None = None,
        speed_mode: str = "pace",
        discipline: str = "containers",
    ) -> None:
        self.plan = plan
        self.speed_mode = speed_mode
        self.discipline = discipline
        self.out_dir = out_dir
        self.broker_url = broker_url
        self.want_netns = netns
        self.broker_kind = broker_kind
        self.say = say
        self.progress = progress
        self.faults = faults or {}
        # namespaces carry linkem's prefix + our pid, so `linkem.cleanup_stale` finds a killed run's
        self.tag = f"{linkem.PREFIX}{os.getpid()}"
        self.topology: linkem.Topology | None = None
        self.broker: EmbeddedBroker | None = None
        self.children: list[Child] = []
        self.link_emulation = "loopback"
        self.link_note = ""
        self._broker_port = 0
        self.pids_file = out_dir / "pids.json"
        self._tc_log = out_dir / "tc_rates.jsonl"
        self._pids: dict[str, int] = {}
        #: the embedded broker listens on every interface (other machines reach it)
        self.broker_public = False
        self.tc_lead_s = TC_LEAD_S

    # ---- set-up / tear-down ----------------------------------------------------------------
    def __enter__(self) -> Experiment:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> None:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        swept = sweep_stale_brokers()
        if swept:
            self.say(f"stopped {len(swept)} broker(s) left by a killed run: pids {swept}")
        ok, why = linkem.availability()
        if ok:
            removed = linkem.cleanup_stale()
            if removed:
                self.say(f"removed {len(removed)} namespace(s) left by a killed run: {', '.join(removed)}")
        if not self.want_netns:
            why = "--no-netns"
        elif self.broker_url:
            ok, why = False, "an external --broker (the namespaces reach only the embedded one)"
        if ok and self.want_netns:
            self._build_topology()
            self.link_emulation = "tc"
            self.link_note = (
                f"network namespaces + veth, {self.topology.shaping} rate shaping per slot "
                f"(burst {self.topology.burst_s * 1e3:g} ms, payload rate x {linkem.WIRE_BYTES_PER_PAYLOAD_BYTE:.4f} "
                "for Ethernet/IP/TCP headers)"
            )
        else:
            self.link_note = f"plain loopback, links not shaped ({why})"
        if self.broker_url is None:
            host = "0.0.0.0" if self.topology is not None or self.broker_public else "127.0.0.1"
            self.broker = start_broker(self.broker_kind, host=host)
            self._broker_port = self.broker.port
        self._write_pids()

    def _build_topology(self) -> None:
        topo = linkem.Topology(self.tag)
        self.topology = topo
        names = ["rsu", *[s.name for s in self.plan.svs], *[c.id for c in self.plan.cvs]]
        for name in names:
            topo.add_namespace(name)
            topo.add_host_link(name)
        for cv in self.plan.cvs:
            topo.add_link(cv.id, "rsu")
            for sv in self.plan.svs:
                topo.add_link(cv.id, sv.name)

    def close(self) -> None:
        """Stop every child, delete every namespace (with its links and qdiscs), stop the broker."""
        for child in reversed(self.children):
            try:
                child.terminate(grace_s=5.0)
            except Exception as exc:  # keep tearing down the rest
                log.warning("stopping %s: %s", child.name, exc)
        self.children.clear()
        if self.topology is not None:
            self.topology.close()
            self.topology = None
        if self.broker is not None:
            self.broker.stop()
            self.broker = None

    def _write_pids(self) -> None:
        """Every process this experiment ever started (so a check after the run can find them)."""
        for c in self.children:
            self._pids[f"{c.name}-{c.pid}"] = c.pid
        if self.broker is not None and self.broker.pid is not None:
            self._pids["broker"] = self.broker.pid
        data = {"pids": self._pids, "namespace_prefix": f"{self.tag}-" if self.topology else None}
        self.pids_file.write_text(json.dumps(data, indent=1) + "\n")

    # ---- addresses -------------------------------------------------------------------------
    def _broker_for(self, ns: str | None) -> str:
        if self.broker_url:
            return self.broker_url
        if self.topology is not None and ns is not None:
            return f"mqtt://{self.topology.host_links[ns].ip_a}:{self._broker_port}"
        return f"mqtt://127.0.0.1:{self._broker_port}"

    def _prefix(self, ns: str) -> list[str]:
        return self.topology.exec_prefix(ns) if self.topology is not None else []

    # ---- where a process runs (tools/hosts/experiment.py places them on other machines) --------
    def _cli(self, name: str) -> list[str]:
        """The argv prefix that runs ``splitrt`` for process ``name``."""
        return [*self._prefix(name), *cli_command("--log-level", "INFO")]

    def _bind(self, name: str, ports: dict[str, int]) -> str:
        return f"tcp://0.0.0.0:{NODE_PORT}" if self.topology is not None else f"tcp://127.0.0.1:{ports[name]}"

    def _path(self, name: str, local: Path) -> str:
        """``local`` (a file of this run) as process ``name`` sees it."""
        return str(local)

    def _decider(self, name: str, decider: str) -> str:
        return decider

    def _tune(self, name: str, config: Any) -> Any:
        """Process ``name``'s config as its machine runs it (per-host settings)."""
        return config

    def _security_args(self, name: str) -> list[str]:
        return []

    def _shaping(self) -> bool:
        """Whether the links are shaped per slot (`_set_rates` at every boundary)."""
        return self.topology is not None

    def _prepare_method(self, mdir: Path) -> None:
        """After the method's input files are written under ``mdir``, before anything starts."""

    def _gather_method(self, mdir: Path, exp: str) -> None:
        """After the method's processes stopped: its files are in ``mdir``."""

    def _node_endpoint(self, cv: str, node: str, ports: dict[str, int]) -> str:
        if self.topology is not None:
            return f"tcp://{self.topology.links[f'{cv}-{node}'].ip_b}:{NODE_PORT}"
        return f"tcp://127.0.0.1:{ports[node]}"

    # ---- one method --------------------------------------------------------------------------
    def run(self, method: str, decider: str) -> LiveResult:
        plan, sc = self.plan, self.plan.scenario
        exp = f"hil{os.getpid()}-{method}"
        mdir = self.out_dir / method
        logs = mdir / "logs"
        mdir.mkdir(parents=True, exist_ok=True)
        if "blackout" in self.faults and self.topology is None:
            raise SplitrtError("--fault blackout needs the emulated links (root, iproute2, no --no-netns)")
        (mdir / "faults.jsonl").unlink(missing_ok=True)
        faults = FaultLog(mdir / "faults.jsonl")
        work_path = plan.work.write(mdir / "work.json")
        for cv in plan.cvs:
            cv.trace.write(mdir / "traces" / f"{cv.id}.json")
        setup = controller_setup(plan, work_path)
        setup.write(mdir / "controller_setup.json")
        self._prepare_method(mdir)
        local_broker = self._broker_for(None)
        publisher = Publisher(local_broker, exp, f"{exp}-orchestrator")
        controller = LyapunovController(setup, plan.work, publish=lambda k, b: publisher.publish(k, b))
        done = {"n": 0, "sum_s": 0.0}

        def count(kind: str, ident: str | None, msg: dict[str, Any]) -> None:
            if kind == "task":
                done["n"] += 1
                done["sum_s"] += float(msg.get("total_s", 0.0))

        recorder = Recorder(local_broker, exp, mdir / "telemetry", callbacks=[controller.on_message, count])
        started = time.monotonic()
        nodes: list[Child] = []
        vehicles: list[Child] = []
        tc_times: list[float] = []
        epoch = float("nan")
        try:
            ports = {name: free_port() for name in plan.node_names} if self.topology is None else {}
            self._start_nodes(exp, mdir, logs, work_path, ports, into=nodes)
            for child in nodes:
                child.wait_ready(START_TIMEOUT_S)
            self._start_vehicles(exp, mdir, logs, work_path, ports, decider, into=vehicles)
            for child in vehicles:
                child.wait_ready(START_TIMEOUT_S)
            if not recorder.subscriber.wait_subscribed(10):
                raise SplitrtError(f"the recorder could not subscribe at {local_broker}")
            self._tc_log = mdir / "tc_rates.jsonl"
            self._tc_log.unlink(missing_ok=True)
            if self._shaping():
                tc_times.append(self._set_rates(0, self._tc_log))
            epoch = time.time() + START_LEAD_S
            clock = SlotClock(epoch, sc.slot_s)
            publisher.publish("slot", clock.beacon(0))
            publisher.publish("event", {"event": "start", "method": method, "epoch_unix_s": epoch})
            cpu = self._drive(method, clock, controller, [*nodes, *vehicles], vehicles, done, tc_times, faults)
            self._await_vehicles(vehicles)
            publisher.publish("event", {"event": "stop", "method": method})
            for child in nodes:
                child.terminate(grace_s=10.0)
        finally:
            for child in [*vehicles, *nodes]:
                child.kill()
                if child in self.children:
                    self.children.remove(child)
            self._write_pids()
            telemetry = recorder.close()
            publisher.close(flush_s=0.5)
            self._gather_method(mdir, exp)
        wall_s = time.monotonic() - started
        return self._collect(method, exp, mdir, controller, telemetry, epoch, wall_s, tc_times, cpu)

    def _start_nodes(
        self, exp: str, mdir: Path, logs: Path, work_path: Path, ports: dict[str, int], *, into: list[Child]
    ) -> None:
        """`splitrt serve` for the RSU and every SV, each appended to ``into`` as it starts."""
        plan, sc = self.plan, self.plan.scenario
        for name, role, factor, capacity in [
            ("rsu", "rsu", plan.rsu_speed_factor, plan.rsu_flops_per_s),
            *[(sv.name, "sv", sv.speed_factor, sv.flops_per_s) for sv in plan.svs],
        ]:
            if self.discipline == "containers":
                factor = 1.0  # the containers hold every task for work / rate: that is the node's speed
            node_config = ServerConfig(
                bind=self._bind(name, ports),
                role=role,
                name=name,
                slot_s=sc.slot_s,
                v=sc.v,
                capacity_flops_per_s=capacity,
                queue_limit=100000,
                discipline=self.discipline,
                grace_s=5.0,
                calibration_runs=1,
                speed_factor=factor,
                speed_mode=self.speed_mode,
                speed_profile_dir=self._path(name, plan.profile_dir),
            )
            cmd = [
                *self._cli(name),
                "serve",
                "--segments",
                *[self._path(name, plan.exports / m) for m in sc.types],
                *to_argv(self._tune(name, node_config)),
                *self._security_args(name),
                "--work",
                self._path(name, work_path),
                "--telemetry",
                self._broker_for(name),
                "--experiment",
                exp,
                "--start-at",
                "beacon",
                "--stats",
                self._path(name, mdir / f"{name}.stats.json"),
            ]
            into.append(self._spawn(name, cmd, logs))

    def _start_vehicles(
        self,
        exp: str,
        mdir: Path,
        logs: Path,
        work_path: Path,
        ports: dict[str, int],
        decider: str,
        *,
        into: list[Child],
    ) -> None:
        """`splitrt vehicle` for every CV (deciding with ``decider``), appended to ``into``."""
        plan, sc = self.plan, self.plan.scenario
        timeout_s = max(10.0, sc.slots * sc.slot_s)
        for i, cv in enumerate(plan.cvs):
            vehicle_config = VehicleConfig(
                edges=tuple(self._node_endpoint(cv.id, node, ports) for node in plan.node_names),
                vehicle_id=cv.id,
                decider=self._decider(cv.id, decider),
                slots=sc.slots,
                slot_s=sc.slot_s,
                timeout_s=timeout_s,
                seed=vehicle_seed(plan.seed, i),
                speed_factor=cv.speed_factor,
                speed_mode=self.speed_mode,
                warmup_runs=2,
                connect_s=60.0,
            )
            cmd = [
                *self._cli(cv.id),
                "vehicle",
                "--segments",
                self._path(cv.id, plan.exports / cv.model),
                *to_argv(self._tune(cv.id, vehicle_config)),
                *self._security_args(cv.id),
                "--node-names",
                ",".join(plan.node_names),
                "--out",
                self._path(cv.id, mdir / f"{cv.id}.jsonl"),
                "--speed-profile",
                self._path(cv.id, plan.profile_dir / cv.model / "profile.json"),
                "--trace",
                self._path(cv.id, mdir / "traces" / f"{cv.id}.json"),
                "--work",
                self._path(cv.id, work_path),
                "--telemetry",
                self._broker_for(cv.id),
                "--experiment",
                exp,
                "--start-at",
                "beacon",
                "--stats",
                self._path(cv.id, mdir / f"{cv.id}.stats.json"),
            ]
            discard_run(mdir / f"{cv.id}.jsonl")  # a previous run's records and journal would be continued
            into.append(self._spawn(cv.id, cmd, logs))

    def _await_vehicles(self, vehicles: list[Child]) -> None:
        """Every vehicle exits 0 within the drain bound after the last slot; else SplitrtError."""
        deadline = time.monotonic() + drain_bound_s(self.plan)
        for child in vehicles:
            code = child.wait(max(1.0, deadline - time.monotonic()))
            if code is None:
                raise SplitrtError(f"{child.name} still running long after the last slot: {child.stderr_tail(500)}")
            if code != 0:
                raise SplitrtError(f"{child.name} exited with {code}: {child.stderr_tail(800)}")

    def _spawn(self, name: str, cmd: list[str], logs: Path) -> Child:
        child = Child(name, cmd, logs, status=True)
        self.children.append(child)
        self._write_pids()
        return child

    def _set_rates(self, slot: int, log_path: Path) -> float:
        """Slot ``slot``'s channel rates on every link (wire rate for that payload rate); each
        update is appended to ``log_path`` as it was applied (``tc_rates.jsonl``)."""
        assert self.topology is not None
        start = time.perf_counter()
        rates = {}
        for i, cv in enumerate(self.plan.cvs):
            for j, node in enumerate(self.plan.node_names):
                rates[f"{cv.id}-{node}"] = linkem.payload_rate_to_wire(float(self.plan.rates_bps[slot, i, j]))
        self.topology.set_rates(rates)
        elapsed = time.perf_counter() - start
        applied = {name: self.topology.rates_bps[name] for name in rates}
        with log_path.open("a") as f:
            f.write(json.dumps({"slot": slot, "unix_s": time.time(), "wire_bps": applied, "update_s": elapsed}) + "\n")
        return elapsed

    def _drive(
        self,
        method: str,
        clock: SlotClock,
        controller: LyapunovController,
        children: list[Child],
        vehicles: list[Child],
        done: dict[str, float],
        tc_times: list[float],
        faults: FaultLog,
    ) -> float:
        """The slot loop: link rates before each boundary, the online controller record after,
        and the injected faults (``self.faults``), each logged as a window in ``faults``.
        Returns the CPU seconds every process of the experiment used during the T slots."""
        sc = self.plan.scenario
        _sleep_until(clock.epoch_unix_s)
        cpu_start = self._cpu_seconds(children)
        cpu_used = float("nan")
        t_slots = sc.slots
        bar = None
        if self.progress:
            from tqdm import tqdm

            bar = tqdm(total=t_slots, desc=f"{method} live", unit="slot", leave=True, file=sys.stderr)
        emitted = -1
        at = {kind: slot for kind, (slot, _) in self.faults.items()}
        broker_down: FaultWindow | None = None
        blackout: FaultWindow | None = None
        cv0_links = [f"{self.plan.cvs[0].id}-{node}" for node in self.plan.node_names]
        t = 0
        try:
            for t in range(1, t_slots + 2):
                boundary = clock.slot_start_unix_s(t)
                if (blackout is not None and t == blackout.detail["end_slot"]) or at.get("blackout") == t:
                    # well before the boundary: the ip commands take tens of ms on a busy host, and
                    # the window must hold exactly the tasks arriving in its slots
                    _sleep_until(boundary - FAULT_LEAD_FRACTION * sc.slot_s)
                if blackout is not None and t == blackout.detail["end_slot"]:
                    self._set_links_down(cv0_links, False)
                    faults.end(blackout)
                    self.say(f"fault: {', '.join(cv0_links)} back up at slot {t}")
                    blackout = None
                if at.get("blackout") == t and self.topology is not None:
                    span = self.faults["blackout"][1]
                    self.say(f"fault: {', '.join(cv0_links)} down for slots {t}..{t + span - 1}")
                    blackout = faults.start("link_blackout", ",".join(cv0_links), slot=t, end_slot=t + span)
                    self._set_links_down(cv0_links, True)
                _sleep_until(boundary - self.tc_lead_s)
                if t == t_slots:
                    cpu_used = self._cpu_seconds(children) - cpu_start
                if at.get("crash") == t:
                    raise RuntimeError(f"injected crash at slot {t} (--fault crash@{t})")
                if at.get("broker-kill") == t and self.broker is not None:
                    self.say(f"fault: killing the broker at slot {t}")
                    # the embedded broker is not started again: down until the end of the run
                    broker_down = faults.start("broker_killed", "broker", slot=t, end_slot=t_slots, restarted=False)
                    self.broker.kill()
                if self._shaping() and t < t_slots:
                    tc_times.append(self._set_rates(t, self._tc_log))
                _sleep_until(boundary + 0.2 * sc.slot_s)
                while emitted < min(t - 1, t_slots - 1):  # slot t - 1's Q(t) is in now
                    emitted += 1
                    controller.emit(emitted)
                if bar is not None:
                    bar.update(1 if t <= t_slots else 0)
                    n = done["n"]
                    bar.set_postfix_str(f"tasks {int(n)}/{len(vehicles) * min(t, t_slots)}", refresh=False)
                if not any(v.alive() for v in vehicles):
                    break
        finally:
            if bar is not None:
                bar.close()
            if blackout is not None:  # the run ended inside the blackout
                self._set_links_down(cv0_links, False)
                faults.end(blackout, end_slot=min(t, t_slots))
            if broker_down is not None:
                faults.end(broker_down)
        return cpu_used

    def _set_links_down(self, links: list[str], down: bool) -> None:
        assert self.topology is not None
        for name in links:
            self.topology.set_down(name, down)

    def _cpu_seconds(self, children: list[Child]) -> float:
        """User + system CPU seconds of the children, the broker and this process so far."""
        import psutil

        pids = [c.pid for c in children]
        if self.broker is not None and self.broker.pid is not None:
            pids.append(self.broker.pid)
        total = sum(psutil.Process().cpu_times()[:2])
        for pid in pids:
            with contextlib.suppress(psutil.Error):  # already gone: its share is lost (a lower bound)
                total += sum(psutil.Process(pid).cpu_times()[:2])
        return float(total)

    def _collect(
        self,
        method: str,
        exp: str,
        mdir: Path,
        controller: LyapunovController,
        telemetry: dict[str, Any],
        epoch: float,
        wall_s: float,
        tc_times: list[float],
        cpu_s: float,
    ) -> LiveResult:
        records: list[dict[str, Any]] = []
        vehicle_stats: dict[str, dict[str, Any]] = {}
        for cv in self.plan.cvs:
            path = mdir / f"{cv.id}.jsonl"
            records += read_jsonl(path) if path.is_file() else []
            vehicle_stats[cv.id] = _read_json(mdir / f"{cv.id}.stats.json")
        node_stats = {name: _read_json(mdir / f"{name}.stats.json") for name in self.plan.node_names}
        records.sort(key=lambda r: (r["slot"], r["vehicle_id"]))
        with (mdir / "records.jsonl").open("w") as f:
            for r in records:
                f.write(json.dumps(r) + "\n")
        controller.add_records(records)
        final = controller.records()
        with (mdir / "controller.jsonl").open("w") as f:
            for r in final:
                f.write(json.dumps(r) + "\n")
        with (mdir / "controller_online.jsonl").open("w") as f:
            for r in controller.emitted:
                f.write(json.dumps(r) + "\n")
        return LiveResult(
            method=method,
            experiment=exp,
            out_dir=mdir,
            link_emulation=self.link_emulation,
            link_note=self.link_note,
            records=records,
            controller=final,
            controller_online=list(controller.emitted),
            vehicle_stats=vehicle_stats,
            node_stats=node_stats,
            telemetry=telemetry,
            epoch_unix_s=epoch,
            wall_s=wall_s,
            cpu_s=cpu_s,
            tc_update_s=tc_times,
            faults=read_windows(mdir / "faults.jsonl") if (mdir / "faults.jsonl").is_file() else [],
        )


def controller_setup(plan: HilPlan, work_path: str | Path = "") -> ControllerSetup:
    """What the Lyapunov controller of ``plan``'s experiment must know (node and CV names, speeds)."""
    sc = plan.scenario
    return ControllerSetup(
        v=sc.v,
        slot_s=sc.slot_s,
        slots=sc.slots,
        cvs={cv.id: {"model": cv.model, "flops_per_s": cv.flops_per_s} for cv in plan.cvs},
        rsu={"name": "rsu", "capacity_flops_per_s": plan.rsu_flops_per_s, "types": list(sc.types)},
        svs={sv.name: sv.flops_per_s for sv in plan.svs},
        work=str(work_path),
    )


def drain_bound_s(plan) -> float:
    """How long after the last slot a vehicle may still be finishing its local queue: at most every
    task of the run computed locally in full (the worst a method can leave it), with 50% to spare,
    and never under 60 s or 3 x the run's length."""
    sc = plan.scenario
    worst = 0.0
    for cv in plan.cvs:
        whole_local = float(plan.work.models[cv.model]["local_flops"][-1])  # cut n: the whole DNN
        worst = max(worst, sc.slots * whole_local / cv.flops_per_s)
    return max(60.0, 3 * sc.slots * sc.slot_s, 1.5 * worst)


def load_result(
    mdir: Path,
    method: str,
    link_emulation: str,
    link_note: str = "",
    vehicle_ids: list[str] | tuple[str, ...] = (),
) -> LiveResult:
    """A method's live results from the files of a run directory (``--report-only``): what a
    `splitrt hil` run left, or a real deployment's files put in the same layout (the vehicles'
    ``<id>.jsonl`` records, for every ``<id>.stats.json`` of a vehicle and every id of
    ``vehicle_ids``; the nodes' and vehicles' stats; ``controller.jsonl`` when the controller
    ran). ``records.jsonl`` (the merged records `splitrt hil` writes) wins over the per-vehicle
    files."""
    records: list[dict[str, Any]] = []
    vehicle_stats: dict[str, dict[str, Any]] = {}
    node_stats: dict[str, dict[str, Any]] = {}
    merged = mdir / "records.jsonl"
    sources = list(vehicle_ids)
    for path in sorted(mdir.glob("*.stats.json")):
        stats = _read_json(path)
        name = path.name.removesuffix(".stats.json")
        (vehicle_stats if "vehicle" in stats else node_stats)[name] = stats
        if "vehicle" in stats and name not in sources:
            sources.append(name)
    if merged.is_file():
        records = _read_records(merged)
    else:
        for name in sources:
            if (mdir / f"{name}.jsonl").is_file():
                records += _read_records(mdir / f"{name}.jsonl")
    if not records:
        raise SplitrtError(f"no task records in {mdir} (records.jsonl or <vehicle>.jsonl)")
    controller = read_jsonl(mdir / "controller.jsonl") if (mdir / "controller.jsonl").is_file() else []
    online = read_jsonl(mdir / "controller_online.jsonl") if (mdir / "controller_online.jsonl").is_file() else []
    records.sort(key=lambda r: (r["slot"], r["vehicle_id"]))
    return LiveResult(
        method=method,
        experiment=mdir.name,
        out_dir=mdir,
        link_emulation=link_emulation,
        link_note=link_note,
        records=records,
        controller=controller,
        controller_online=online,
        vehicle_stats=vehicle_stats,
        node_stats=node_stats,
        telemetry={},
        epoch_unix_s=float("nan"),
        wall_s=float("nan"),
        cpu_s=float("nan"),
        faults=_read_faults(mdir / "faults.jsonl"),
    )


def _sleep_until(unix_s: float) -> None:
    delay = unix_s - time.time()
    if delay > 0:
        time.sleep(delay)


def _read_records(path: Path) -> list[dict[str, Any]]:
    try:
        records = read_jsonl(path)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SplitrtError(f"cannot read task records {path}: {exc}") from None
    for n, r in enumerate(records, 1):
        missing = [k for k in ("task_id", "vehicle_id", "slot", "outcome", "total_s") if k not in r]
        if missing:
            raise SplitrtError(f"{path}: record {n} is not a task record (no {', '.join(missing)})")
    return records


def _read_faults(path: Path) -> list[FaultWindow]:
    """The fault windows of a run directory's ``faults.jsonl`` (none when it is absent)."""
    if not path.is_file():
        return []
    try:
        return read_windows(path)
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as exc:
        raise SplitrtError(f"cannot read fault windows {path}: {exc}") from None


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}
