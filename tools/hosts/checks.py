"""Can a host run its roles? The probe's facts (tools/hosts/probe.py) against what the run needs.

Shared by `splitrt doctor --hosts` (one row per host) and `splitrt hil --hosts` (refuses to start
while any host has a problem, naming each)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from splitrt.tools.hosts import probe
from splitrt.tools.hosts.inventory import Host

PROVIDER_NAMES = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
}
#: Free disk a host needs in its work directory beyond the files it is sent.
DISK_MARGIN_BYTES = 100 << 20


def node_ports(host: Host) -> dict[str, int]:
    """The port each edge node on ``host`` binds (its first node at node_port, the next + 1 ..)."""
    nodes = [r for r in host.roles if not r.startswith("cv")]
    return {r: host.node_port + i for i, r in enumerate(nodes)}


def probe_source() -> str:
    return Path(probe.__file__).read_text()


def probe_host(conn) -> dict[str, Any]:
    host = conn.host
    return conn.python(
        probe_source(), {"workdir": host.workdir, "ports": list(node_ports(host).values())}, what="the host probe"
    )


@dataclass
class Verdict:
    host: str
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def judge(
    host: Host, facts: dict[str, Any], local: dict[str, Any], *, need_tc: bool = False, need_bytes: int = 0
) -> Verdict:
    """The problems that stop ``host`` from running its roles, each a phrase naming the fact."""
    v = Verdict(host.name)
    if facts.get("error"):
        v.problems.append(facts["error"])
    elif facts.get("version") != local.get("version") or facts.get("source_digest") != local.get("source_digest"):
        v.problems.append(
            f"splitrt {facts.get('version')} (sources {str(facts.get('source_digest'))[:12]}) differs from this "
            f"machine's {local.get('version')} ({str(local.get('source_digest'))[:12]}): install the same version"
        )
    if not facts.get("error") and facts.get("device_import") != "ok":
        v.problems.append(f"the device install does not import without torch: {facts.get('device_import')}")
    if facts.get("onnxruntime") is None:
        v.problems.append(f"onnxruntime does not import: {facts.get('onnxruntime_error', '?')}")
    else:
        wanted = PROVIDER_NAMES[host.provider or "cpu"]
        if wanted not in facts.get("providers", []):
            v.problems.append(f"provider {host.provider} ({wanted}) is not in onnxruntime's {facts.get('providers')}")
    if facts.get("ports_busy"):
        v.problems.append(f"port(s) {', '.join(map(str, facts['ports_busy']))} already in use")
    free = facts.get("disk_free_bytes")
    if free is None:
        v.problems.append(f"work directory {host.workdir} not usable: {facts.get('workdir_error', '?')}")
    elif free < need_bytes + DISK_MARGIN_BYTES:
        v.problems.append(
            f"{free / 1e6:.0f} MB free in {host.workdir}, needs {(need_bytes + DISK_MARGIN_BYTES) / 1e6:.0f} MB"
        )
    if need_tc and not facts.get("tc"):
        v.problems.append("--links tc needs root and the tc binary on the host")
    return v
