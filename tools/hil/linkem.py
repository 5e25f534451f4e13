"""Emulated vehicular links on one machine: network namespaces joined by veth pairs, shaped by
Linux traffic control every slot.

Each node of an experiment (RSU, every SV, every CV) gets its own network namespace; every link
of the scenario (CV-RSU, CV-SV) is a veth pair with a /30 subnet. `set_rate` applies the channel
model's rate (eqs 1-2) to both directions of a link: tc shapes egress only, so each end gets a
root qdisc. This kernel has no netem ("Specified qdisc kind is unknown"), so the rate is shaped
with tbf (measured accurate here: 10 Mbit/s -> 9.6); where netem exists, ``delay_ms`` adds a
netem delay below the tbf. Which qdiscs were used is reported (`shaping`). `set_rates` changes
many links at once with one ``tc -batch`` per namespace (what a per-slot update needs).

Two details decide how closely a transfer takes the model's 8 D / R (measured here with one
tensor per round trip at 150 Mbit/s): the token bucket's burst passes at line speed after an
idle gap, so a 5 ms burst let a 37 KB tensor through in 0.14x its time and a 602 KB one in 0.93x;
a 0.2 ms burst (``burst_s``, at least two frames) gives 1.02x and 1.07x. And tbf counts frames
(1514 bytes on the wire for 1448 bytes of TCP payload), so a link meant to carry R bit/s of
payload is shaped at R x `WIRE_BYTES_PER_PAYLOAD_BYTE` (`payload_rate_to_wire`).

Namespaces that must reach the experiment's control plane (the MQTT broker in the root
namespace) get an unshaped `add_host_link`.

Everything created is removed by `close()`, which also runs on interpreter exit; names carry the
prefix ``srt<pid>`` so `cleanup_stale()` can remove leftovers of a crashed run.
"""

from __future__ import annotations

import atexit
import logging
import os
import shutil
import subprocess
from dataclasses import dataclass

from splitrt.edge_runtime.errors import SplitrtError

log = logging.getLogger(__name__)

PREFIX = "srt"
#: Ethernet frame bytes per TCP payload byte at MTU 1500 with timestamps: 1514 / 1448.
WIRE_BYTES_PER_PAYLOAD_BYTE = 1514 / 1448
MIN_BURST_BYTES = 2 * 1514


def payload_rate_to_wire(payload_bits_per_s: float) -> float:
    """The tbf rate that lets ``payload_bits_per_s`` of TCP payload through."""
    return payload_bits_per_s * WIRE_BYTES_PER_PAYLOAD_BYTE


def _run(cmd: list[str], check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=20)
    if check and result.returncode != 0:
        raise SplitrtError(f"`{' '.join(cmd)}` failed: {result.stderr.strip() or result.stdout.strip()}")
    return result


def availability() -> tuple[bool, str]:
    """(True, '') when namespaces + tc can be used here, else (False, why)."""
    if os.geteuid() != 0:
        return False, "not running as root"
    for tool in ("ip", "tc"):
        if shutil.which(tool) is None:
            return False, f"{tool} (iproute2) is not installed"
    probe = f"{PREFIX}probe{os.getpid()}"
    r = _run(["ip", "netns", "add", probe], check=False)
    if r.returncode != 0:
        return False, f"cannot create a network namespace: {r.stderr.strip()}"
    _run(["ip", "netns", "del", probe], check=False)
    return True, ""


def netem_available() -> bool:
    """Whether the kernel has the netem qdisc (probed on a dummy device in a scratch namespace)."""
    ns = f"{PREFIX}netem{os.getpid()}"
    if _run(["ip", "netns", "add", ns], check=False).returncode != 0:
        return False
    try:
        _run(["ip", "-n", ns, "link", "add", "d0", "type", "dummy"], check=False)
        return (
            _run(["tc", "-n", ns, "qdisc", "add", "dev", "d0", "root", "netem", "delay", "1ms"], check=False).returncode
            == 0
        )
    finally:
        _run(["ip", "netns", "del", ns], check=False)


def cleanup_stale() -> list[str]:
    """Delete namespaces left by crashed runs (prefix ``srt``, owner process gone)."""
    removed = []
    out = _run(["ip", "netns", "list"], check=False).stdout
    for line in out.splitlines():
        name = line.split()[0] if line.split() else ""
        if not name.startswith(PREFIX):
            continue
        pid = "".join(ch for ch in name[len(PREFIX) :].split("-")[0] if ch.isdigit())
        if pid and pid.isdigit() and int(pid) != os.getpid() and os.path.exists(f"/proc/{pid}"):
            continue  # its owner is alive
        _run(["ip", "netns", "del", name], check=False)
        removed.append(name)
    return removed


def _free_host_block() -> int:
    """A 10.78.N.0/24 with no address in the root namespace yet: host links live there, so two
    experiments (or one and the leftovers of a killed one) never route to each other's veths."""
    out = _run(["ip", "-4", "-o", "addr", "show"], check=False).stdout
    used = {int(part.split(".")[2]) for part in out.split() if part.startswith("10.78.") and part.count(".") == 3}
    for block in range(250):
        if block not in used:
            return block
    raise SplitrtError("no free 10.78.N.0/24 block for host links (stale experiments? see `ip -4 addr`)")


@dataclass(frozen=True)
class Link:
    """A veth pair between namespaces ``ns_a`` (device ``dev_a``, ``ip_a``) and ``ns_b``."""

    name: str
    ns_a: str
    dev_a: str
    ip_a: str
    ns_b: str
    dev_b: str
    ip_b: str


class Topology:
    """The namespaces and links of one experiment. Use as a context manager or call `close()`."""

    def __init__(self, tag: str | None = None, *, delay_ms: float = 0.0, burst_s: float = 0.0002) -> None:
        ok, why = availability()
        if not ok:
            raise SplitrtError(f"link emulation needs root and iproute2: {why}")
        self.tag = tag or f"{PREFIX}{os.getpid()}"
        self.namespaces: list[str] = []
        self.links: dict[str, Link] = {}
        self.rates_bps: dict[str, float] = {}
        self.loss: dict[str, float] = {}
        self.loss_method: dict[str, str] = {}
        self.delay_ms = delay_ms
        self.burst_s = burst_s
        self.host_links: dict[str, Link] = {}
        self._host_block: int | None = None
        self.netem = delay_ms > 0 and netem_available()
        if delay_ms > 0 and not self.netem:
            log.warning("netem is not available on this kernel: link delay %.1f ms is not emulated", delay_ms)
        self._closed = False
        atexit.register(self.close)

    @property
    def shaping(self) -> str:
        return "tbf+netem" if self.netem else "tbf"

    def ns(self, name: str) -> str:
        return f"{self.tag}-{name}"

    def add_namespace(self, name: str) -> str:
        full = self.ns(name)
        _run(["ip", "netns", "add", full])
        self.namespaces.append(full)
        _run(["ip", "-n", full, "link", "set", "lo", "up"])
        return full

    def add_link(self, a: str, b: str) -> Link:
        """Join namespaces ``a`` and ``b`` (short names) by a veth pair with a /30 subnet."""
        idx = len(self.links)
        if idx >= 250 * 64:
            raise SplitrtError("too many emulated links")
        net = f"10.{77 + idx // (64 * 250)}.{(idx // 64) % 250}.{(idx % 64) * 4}"
        base = ".".join(net.split(".")[:3])
        last = int(net.split(".")[3])
        ip_a, ip_b = f"{base}.{last + 1}", f"{base}.{last + 2}"
        tmp_a, tmp_b = f"{self.tag[:8]}l{idx}a", f"{self.tag[:8]}l{idx}b"
        ns_a, ns_b = self.ns(a), self.ns(b)
        dev_a, dev_b = f"to-{b}"[:15], f"to-{a}"[:15]
        _run(["ip", "link", "add", tmp_a, "type", "veth", "peer", "name", tmp_b])
        _run(["ip", "link", "set", tmp_a, "netns", ns_a, "name", dev_a])
        _run(["ip", "link", "set", tmp_b, "netns", ns_b, "name", dev_b])
        for ns, dev, ip in ((ns_a, dev_a, ip_a), (ns_b, dev_b, ip_b)):
            _run(["ip", "-n", ns, "addr", "add", f"{ip}/30", "dev", dev])
            _run(["ip", "-n", ns, "link", "set", dev, "up"])
        link = Link(f"{a}-{b}", ns_a, dev_a, ip_a, ns_b, dev_b, ip_b)
        self.links[link.name] = link
        return link

    def add_host_link(self, name: str) -> Link:
        """Join the root namespace to namespace ``name`` by an unshaped veth pair (control plane);
        ``ip_a`` is the root side's address, ``ip_b`` the namespace's."""
        idx = len(self.host_links)
        if idx >= 64:
            raise SplitrtError("too many host links (64 per experiment)")
        if self._host_block is None:
            self._host_block = _free_host_block()
        base = f"10.78.{self._host_block}"
        last = (idx % 64) * 4
        ip_a, ip_b = f"{base}.{last + 1}", f"{base}.{last + 2}"
        dev_a, tmp_b = f"{self.tag[:10]}h{idx}"[:15], f"{self.tag[:8]}h{idx}b"[:15]
        ns_b = self.ns(name)
        _run(["ip", "link", "add", dev_a, "type", "veth", "peer", "name", tmp_b])
        _run(["ip", "link", "set", tmp_b, "netns", ns_b, "name", "to-host"])
        _run(["ip", "addr", "add", f"{ip_a}/30", "dev", dev_a])
        _run(["ip", "link", "set", dev_a, "up"])
        _run(["ip", "-n", ns_b, "addr", "add", f"{ip_b}/30", "dev", "to-host"])
        _run(["ip", "-n", ns_b, "link", "set", "to-host", "up"])
        link = Link(f"host-{name}", "", dev_a, ip_a, ns_b, "to-host", ip_b)
        self.host_links[name] = link
        return link

    def _qdisc_lines(self, dev: str, rate: int) -> list[str]:
        burst = max(int(rate / 8 * self.burst_s), MIN_BURST_BYTES)
        tbf = f"tbf rate {rate}bit burst {burst} latency 100ms"
        if self.netem:
            return [
                f"qdisc replace dev {dev} root handle 1: netem delay {self.delay_ms}ms",
                f"qdisc replace dev {dev} parent 1:1 handle 10: {tbf}",
            ]
        return [f"qdisc replace dev {dev} root {tbf}"]

    def set_rates(self, rates_bps: dict[str, float]) -> None:
        """Shape many links at once (link name -> bit/s on the wire): one ``tc -batch`` per
        namespace, so a per-slot update of every link costs a few processes, not two per link."""
        per_ns: dict[str, list[str]] = {}
        for name, bits_per_s in rates_bps.items():
            link = self.links[name]
            rate = max(int(bits_per_s), 8_000)
            for ns, dev in ((link.ns_a, link.dev_a), (link.ns_b, link.dev_b)):
                per_ns.setdefault(ns, []).extend(self._qdisc_lines(dev, rate))
            self.rates_bps[name] = float(rate)
        for ns, lines in per_ns.items():
            result = subprocess.run(
                ["tc", "-n", ns, "-batch", "-"],
                input="\n".join(lines) + "\n",
                capture_output=True,
                text=True,
                timeout=20,
            )
            if result.returncode != 0:
                raise SplitrtError(f"tc -n {ns} -batch failed: {result.stderr.strip() or result.stdout.strip()}")

    def set_rate(self, link: Link | str, bits_per_s: float) -> None:
        """Shape both directions of ``link`` to ``bits_per_s`` (tbf; netem delay below it when
        available and asked for). Replaces the previous qdisc, so it can run every slot."""
        link = self.links[link] if isinstance(link, str) else link
        rate = max(int(bits_per_s), 8_000)
        for ns, dev in ((link.ns_a, link.dev_a), (link.ns_b, link.dev_b)):
            for line in self._qdisc_lines(dev, rate):
                _run(["tc", "-n", ns, *line.split()])
        self.rates_bps[link.name] = float(rate)

    def set_down(self, link: Link | str, down: bool = True) -> None:
        """A blackout: the link's devices go down (or back up)."""
        link = self.links[link] if isinstance(link, str) else link
        for ns, dev in ((link.ns_a, link.dev_a), (link.ns_b, link.dev_b)):
            _run(["ip", "-n", ns, "link", "set", dev, "down" if down else "up"])

    def set_loss(self, link: Link | str, fraction: float, method: str | None = None) -> str:
        """Drop each packet arriving at either end of ``link`` with probability ``fraction`` (0
        removes the rule). Returns the mechanism: ``nftables`` (``meta random`` in a prerouting
        chain) or, without nft, ``iptables`` (``statistic --mode random`` in raw PREROUTING);
        ``method`` forces one.

        Packets are dropped on arrival, as a lossy radio would: a drop on the sender's output
        path would instead fail its send() with EPERM, which no real link does. netem's ``loss``
        is not used even where the kernel has it: the packet filter works on every kernel here
        and leaves the tbf/netem qdiscs of `set_rate` alone, so rate and loss compose."""
        link = self.links[link] if isinstance(link, str) else link
        if not 0.0 <= fraction < 1.0:
            raise SplitrtError(f"loss must be a fraction in [0, 1), got {fraction}")
        if method is None:
            method = self.loss_method.get(link.name) or (
                "nftables" if shutil.which("nft") else "iptables" if shutil.which("iptables") else None
            )
        if (
            method not in ("nftables", "iptables")
            or shutil.which("nft" if method == "nftables" else "iptables") is None
        ):
            raise SplitrtError(f"packet loss needs nftables or iptables (apt-get install nftables); got {method!r}")
        for ns, dev in ((link.ns_a, link.dev_a), (link.ns_b, link.dev_b)):
            table = "splitrt_" + "".join(ch if ch.isalnum() else "_" for ch in dev)
            nft = ["ip", "netns", "exec", ns, "nft"]
            ipt = ["ip", "netns", "exec", ns, "iptables"]
            rule = ["-i", dev, "-m", "statistic", "--mode", "random", "--probability", f"{fraction:.6f}", "-j", "DROP"]
            if method == "nftables":
                _run([*nft, "delete", "table", "inet", table], check=False)
                if fraction > 0:
                    threshold = int(fraction * 0x7FFFFFFF)
                    _run([*nft, "add", "table", "inet", table])
                    _run([*nft, "add", "chain", "inet", table, "in", "{ type filter hook prerouting priority -300 ; }"])
                    _run(
                        [*nft, "add", "rule", "inet", table, "in", "iifname", dev]
                        + ["meta", "random", "&", "2147483647", "<", str(threshold), "counter", "drop"]
                    )
            else:
                previous = self.loss.get(link.name)
                if previous:
                    old = [*rule[:-3], f"{previous:.6f}", "-j", "DROP"]
                    _run([*ipt, "-t", "raw", "-D", "PREROUTING", *old], check=False)
                if fraction > 0:
                    _run([*ipt, "-t", "raw", "-A", "PREROUTING", *rule])
        self.loss[link.name] = fraction
        self.loss_method[link.name] = method
        return method

    def dropped_packets(self, link: Link | str) -> int | None:
        """Packets the loss rule of ``link`` has dropped so far (both ends; nftables only, else None)."""
        link = self.links[link] if isinstance(link, str) else link
        if self.loss_method.get(link.name) != "nftables":
            return None
        total = 0
        for ns, dev in ((link.ns_a, link.dev_a), (link.ns_b, link.dev_b)):
            table = "splitrt_" + "".join(ch if ch.isalnum() else "_" for ch in dev)
            out = _run(["ip", "netns", "exec", ns, "nft", "list", "table", "inet", table], check=False).stdout
            words = out.split()
            total += sum(
                int(words[i + 2]) for i, w in enumerate(words[:-2]) if w == "counter" and words[i + 1] == "packets"
            )
        return total

    def exec_prefix(self, name: str) -> list[str]:
        """Command prefix that runs a program inside namespace ``name`` (short name).

        ``nsenter --net`` (util-linux) only switches the network namespace; ``ip netns exec``
        also remounts /sys, which hides /sys/fs/cgroup and with it the CPU-quota speed emulation
        (splitrt.edge_runtime.compute.speed), so it is only the fallback."""
        if shutil.which("nsenter"):
            return ["nsenter", f"--net=/run/netns/{self.ns(name)}", "--"]
        return ["ip", "netns", "exec", self.ns(name)]

    def qdiscs(self) -> list[str]:
        out = []
        for ns in self.namespaces:
            out += [
                f"{ns}: {line}" for line in _run(["tc", "-n", ns, "qdisc", "show"], check=False).stdout.splitlines()
            ]
        return out

    def close(self) -> None:
        """Delete every namespace (their veth ends and qdiscs go with them)."""
        if self._closed:
            return
        self._closed = True
        for ns in reversed(self.namespaces):
            _run(["ip", "netns", "del", ns], check=False)
        self.namespaces.clear()
        atexit.unregister(self.close)

    def __enter__(self) -> Topology:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def list_namespaces(prefix: str = PREFIX) -> list[str]:
    out = _run(["ip", "netns", "list"], check=False).stdout
    return [line.split()[0] for line in out.splitlines() if line.split() and line.split()[0].startswith(prefix)]
