"""The inventory of a multi-host run: which machine runs which scenario role, and how to reach it.

A TOML file (docs/deploy.md has a complete example)::

    [defaults]                     # optional: every host's value unless the host sets its own
    user = "pi"
    key = "~/.ssh/splitrt_ed25519" # the private key the orchestrator logs in with (required)
    port = 22
    python = "/home/pi/splitrt/.venv/bin/python"   # the interpreter with splitrt's device install
    workdir = "/home/pi/.cache/splitrt"            # exports cache and (temporary) run directories
    known_hosts = "~/.ssh/known_hosts"             # optional: pin the host keys (else accept new ones)

    [orchestrator]
    address = "192.168.1.10"       # optional: how the hosts reach this machine's broker
                                   # (default: the address each SSH connection arrived at)

    [hosts.rsu-box]
    address = "192.168.1.20"
    roles = ["rsu"]
    threads = 4                    # optional per-host settings of the processes it runs
    provider = "cuda"              #   ONNX Runtime provider: cpu, cuda or tensorrt
    speed_factor = 1.0             #   replaces the scenario's emulated slow-down (1 = native)
    interface = "eth0"             #   for --links tc: the interface whose egress is shaped

    [hosts.pi1]
    address = "192.168.1.31"
    roles = ["cv0", "cv1"]

Every role of the scenario (``rsu``, ``sv1``.., ``cv0``..) is placed on exactly one host.
`load_inventory` reads and checks the file itself, `check_roles` the placement against a
scenario's roles; each mistake is one `SplitrtError` naming the host and the field.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from splitrt.edge_runtime.errors import SplitrtError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

HOST_KEYS = {
    "address",
    "user",
    "key",
    "port",
    "python",
    "workdir",
    "roles",
    "threads",
    "provider",
    "speed_factor",
    "interface",
    "known_hosts",
    "node_port",
}
DEFAULT_KEYS = HOST_KEYS - {"address", "roles"}
PROVIDERS = ("cpu", "cuda", "tensorrt")
ROLE_RE = re.compile(r"^(rsu|sv[1-9][0-9]*|cv(0|[1-9][0-9]*))$")
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")


@dataclass(frozen=True)
class Host:
    """One machine of the inventory (module docstring)."""

    name: str
    address: str
    roles: tuple[str, ...]
    key: Path
    user: str = "root"
    port: int = 22
    python: str = "python3"
    workdir: str = "/tmp/splitrt-host"
    known_hosts: Path | None = None
    threads: int | None = None
    provider: str | None = None
    speed_factor: float | None = None
    interface: str | None = None
    node_port: int = 5555  # the first edge node on this host binds here, the next one + 1 ...

    @property
    def where(self) -> str:
        return f"{self.user}@{self.address}:{self.port}"


@dataclass(frozen=True)
class Inventory:
    path: Path
    hosts: tuple[Host, ...]
    orchestrator_address: str | None = None
    _by_role: dict[str, Host] = field(default_factory=dict, compare=False, repr=False)

    def host_of(self, role: str) -> Host:
        return self._by_role[role]

    @property
    def roles(self) -> list[str]:
        return list(self._by_role)


def load_inventory(path: str | Path) -> Inventory:
    """Read and check ``path`` (module docstring); one-line SplitrtError for any mistake."""
    path = Path(path).expanduser()
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise SplitrtError(f"--hosts {path}: no such file") from None
    except OSError as exc:
        raise SplitrtError(f"--hosts {path}: cannot read it ({exc.strerror or exc})") from None
    except tomllib.TOMLDecodeError as exc:
        raise SplitrtError(f"--hosts {path}: not valid TOML ({exc})") from None
    unknown = set(data) - {"defaults", "orchestrator", "hosts"}
    if unknown:
        raise SplitrtError(
            f"--hosts {path}: unknown section(s) {', '.join(sorted(unknown))} (defaults, orchestrator, hosts)"
        )
    defaults = _table(data, "defaults", path)
    bad = set(defaults) - DEFAULT_KEYS
    if bad:
        raise SplitrtError(f"--hosts {path}: [defaults] has unknown key(s) {', '.join(sorted(bad))}")
    orchestrator = _table(data, "orchestrator", path)
    if set(orchestrator) - {"address"}:
        raise SplitrtError(f"--hosts {path}: [orchestrator] takes only 'address'")
    hosts_table = _table(data, "hosts", path)
    if not hosts_table:
        raise SplitrtError(f"--hosts {path}: no [hosts.NAME] table")
    hosts: list[Host] = []
    by_role: dict[str, Host] = {}
    for name, raw in hosts_table.items():
        if not isinstance(raw, dict):
            raise SplitrtError(f"--hosts {path}: hosts.{name} must be a table")
        host = _host(name, {**defaults, **raw}, set(raw), path)
        for role in host.roles:
            if role in by_role:
                raise SplitrtError(
                    f"--hosts {path}: role {role} is given twice (hosts {by_role[role].name} and {name})"
                )
            by_role[role] = host
        hosts.append(host)
    address = orchestrator.get("address")
    if address is not None and (not isinstance(address, str) or not address):
        raise SplitrtError(f"--hosts {path}: orchestrator.address must be a host name or IP address")
    return Inventory(path=path, hosts=tuple(hosts), orchestrator_address=address, _by_role=by_role)


def check_roles(inventory: Inventory, roles: list[str]) -> None:
    """Every one of the scenario's ``roles`` on exactly one host, and no role it does not have."""
    extra = [r for r in inventory.roles if r not in roles]
    if extra:
        r = extra[0]
        raise SplitrtError(
            f"--hosts {inventory.path}: host {inventory.host_of(r).name} has role {r}, which this scenario does not "
            f"have (its roles: {', '.join(roles)})"
        )
    missing = [r for r in roles if r not in inventory.roles]
    if missing:
        raise SplitrtError(f"--hosts {inventory.path}: no host has role(s) {', '.join(missing)}")


def _table(data: dict[str, Any], key: str, path: Path) -> dict[str, Any]:
    value = data.get(key, {})
    if not isinstance(value, dict):
        raise SplitrtError(f"--hosts {path}: [{key}] must be a table")
    return value


def _host(name: str, raw: dict[str, Any], own: set[str], path: Path) -> Host:
    where = f"--hosts {path}: host {name}"
    if not NAME_RE.match(name):
        raise SplitrtError(f"{where}: a host name is letters, digits, '.', '_' or '-'")
    bad = own - HOST_KEYS
    if bad:
        raise SplitrtError(f"{where}: unknown key(s) {', '.join(sorted(bad))} (known: {', '.join(sorted(HOST_KEYS))})")
    address = raw.get("address")
    if not isinstance(address, str) or not address:
        raise SplitrtError(f"{where}: no address")
    roles = raw.get("roles")
    if not isinstance(roles, list) or not roles or not all(isinstance(r, str) for r in roles):
        raise SplitrtError(f'{where}: roles must be a non-empty list such as ["rsu"] or ["cv0", "cv1"]')
    for r in roles:
        if not ROLE_RE.match(r):
            raise SplitrtError(f"{where}: unknown role {r!r} (roles are rsu, sv1, sv2, .., cv0, cv1, ..)")
    if len(set(roles)) != len(roles):
        raise SplitrtError(f"{where}: a role is listed twice in {roles}")
    key = raw.get("key")
    if not isinstance(key, str) or not key:
        raise SplitrtError(f"{where}: no key (the SSH private key file to log in with; here or in [defaults])")
    key_path = _relative(key, path)
    if not key_path.is_file():
        raise SplitrtError(f"{where}: key {key_path} is not a file")
    known = raw.get("known_hosts")
    known_path = _relative(known, path) if isinstance(known, str) and known else None
    if known_path is not None and not known_path.is_file():
        raise SplitrtError(f"{where}: known_hosts {known_path} is not a file")
    provider = raw.get("provider")
    if provider is not None and provider not in PROVIDERS:
        raise SplitrtError(f"{where}: provider must be one of {', '.join(PROVIDERS)}, got {provider!r}")
    return Host(
        name=name,
        address=address,
        roles=tuple(roles),
        key=key_path,
        user=_get(raw, "user", str, "root", where),
        port=_get(raw, "port", int, 22, where, lo=1, hi=65535),
        python=_get(raw, "python", str, "python3", where),
        workdir=_get(raw, "workdir", str, "/tmp/splitrt-host", where),
        known_hosts=known_path,
        threads=_get(raw, "threads", int, None, where, lo=1, hi=1024),
        provider=provider,
        speed_factor=_get(raw, "speed_factor", float, None, where, lo=1e-3, hi=1e6),
        interface=_get(raw, "interface", str, None, where),
        node_port=_get(raw, "node_port", int, 5555, where, lo=1, hi=65000),
    )


def _get(raw: dict[str, Any], key: str, kind: type, default: Any, where: str, lo: float = 0, hi: float = 0) -> Any:
    value = raw.get(key, default)
    if value is None:
        return None
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise SplitrtError(f"{where}: {key} must be a {kind.__name__}, got {value!r}")
    if kind is str and not value:
        raise SplitrtError(f"{where}: {key} is empty")
    if hi and not lo <= value <= hi:
        raise SplitrtError(f"{where}: {key} must be in [{lo:g}, {hi:g}], got {value!r}")
    return value


def _relative(text: str, inventory: Path) -> Path:
    """A local path of the inventory: ``~`` expanded, relative to the inventory's folder."""
    p = Path(text).expanduser()
    return p if p.is_absolute() else (inventory.parent / p).resolve()
