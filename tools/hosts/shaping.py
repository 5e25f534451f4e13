"""``--links tc`` on real hosts: the per-slot rate shaping of one-machine runs, applied by tc on the
hosts' own interfaces (root on every host).

Each host gets one `HostShaper`: a shell on the host (over its own SSH channel) that installs an
htb root qdisc on the host's interface with one class per link leaving it, classified by u32 on
the peer's address and the node's port, and then runs every ``tc`` line the orchestrator sends it,
one per class and slot boundary. A CV host shapes what it sends to each node (the tensors), a node
host what it sends back to each CV (the results), both at that slot's channel rate, as the wire
rate of that much TCP payload (tools/hil/linkem.py: `payload_rate_to_wire`). The shell removes the
qdisc when its input ends or it is told to stop, so the shaping goes with the SSH session, also when
the orchestrator is killed. Two CVs on one host cannot be told apart by tc (same address, ports
picked by the kernel): ``--links tc`` refuses such an inventory.
"""

from __future__ import annotations

import contextlib
import shlex
import time

from splitrt.edge_runtime.errors import SplitrtError
from splitrt.tools.hil.linkem import MIN_BURST_BYTES

BURST_S = 0.0002  # as linkem's tbf: a longer burst lets short tensors through at line speed


def burst_bytes(rate_bps: float) -> int:
    return max(int(rate_bps / 8 * BURST_S), MIN_BURST_BYTES)


class HostShaper:
    """tc on one host (module docstring). ``links``: {link name: (classid minor, filter match)}."""

    def __init__(self, conn, interface: str, links: dict[str, tuple[int, str]], rates_bps: dict[str, float]) -> None:
        self.conn = conn
        self.interface = interface
        self.links = links
        self.rates_bps: dict[str, float] = {}
        dev = shlex.quote(interface)
        setup = [
            f"tc qdisc replace dev {dev} root handle 1: htb default 1",
            f"tc class add dev {dev} parent 1: classid 1:1 htb rate 100gbit quantum 1514",
        ]
        for name, (minor, match) in links.items():
            rate = int(rates_bps[name])
            setup.append(
                f"tc class add dev {dev} parent 1: classid 1:{minor} htb rate {rate}bit ceil {rate}bit "
                f"burst {burst_bytes(rate)} cburst {burst_bytes(rate)} quantum 1514"
            )
            setup.append(f"tc filter add dev {dev} parent 1: protocol ip prio 1 u32 {match} flowid 1:{minor}")
            self.rates_bps[name] = float(rate)
        script = (
            f"trap 'tc qdisc del dev {dev} root 2>/dev/null' EXIT; trap 'exit 0' HUP TERM INT; "
            + " && ".join(setup)
            + " && echo READY || exit 3; "
            + 'while read -r line; do tc $line 2>&1 || echo "FAIL $line"; echo DONE; done'
        )
        self.chan = conn.transport.open_session(timeout=30)
        self.chan.set_combine_stderr(True)
        self.chan.exec_command(f"sh -c {shlex.quote(script)}")
        self._f = self.chan.makefile("rb")
        said = []
        while True:  # tc's warnings may come first
            line = self._f.readline().decode(errors="replace")
            if line.strip() == "READY":
                break
            if not line:
                raise SplitrtError(f"host {conn.host.name}: tc shaping on {interface} failed: {' '.join(said)[-400:]}")
            said.append(line.strip())

    def set_rates(self, rates_bps: dict[str, float]) -> None:
        """Each link's class to its new rate; waits until the host applied them all."""
        lines = []
        for name, rate in rates_bps.items():
            minor, _ = self.links[name]
            r = max(int(rate), 8)
            lines.append(
                f"class change dev {self.interface} parent 1: classid 1:{minor} htb rate {r}bit ceil {r}bit "
                f"burst {burst_bytes(r)} cburst {burst_bytes(r)} quantum 1514\n"
            )
        self.chan.sendall("".join(lines).encode())
        for name in rates_bps:
            out = self._f.readline().decode(errors="replace").strip()
            while out != "DONE":
                if not out:
                    raise SplitrtError(f"host {self.conn.host.name}: the tc shell ended")
                if out.startswith("FAIL"):
                    raise SplitrtError(f"host {self.conn.host.name}: {out}")
                out = self._f.readline().decode(errors="replace").strip()
            self.rates_bps[name] = float(max(int(rates_bps[name]), 8))

    def close(self, timeout_s: float = 10.0) -> None:
        """Input ends: the host's shell removes the qdisc and exits."""
        with contextlib.suppress(Exception):
            self.chan.shutdown_write()
            deadline = time.monotonic() + timeout_s
            while not self.chan.exit_status_ready() and time.monotonic() < deadline:
                time.sleep(0.02)
            self.chan.close()
