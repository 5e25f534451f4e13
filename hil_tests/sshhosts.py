"""Real SSH hosts for the multi-host tests: one network namespace per host, each with its own
address on a bridge, its own OpenSSH server (Debian's sshd), host key and authorized key.

`SshHosts(names)` (a context manager) builds, as root: a bridge ``srtbr<pid>`` in the root
namespace at 10.79.<n>.1/24 (where the orchestrator and its broker are reached), a namespace
``srt<pid>-<name>`` per host joined to it by a veth at 10.79.<n>.<k + 2>, an ed25519 client key,
and an sshd per namespace listening on its address, port 22. Everything a host's processes do
runs in its namespace, so ``kill(name)`` (every process of the namespace, sshd included) is a host
dropping off the network. `close` kills what runs in the namespaces, deletes them and the bridge,
and removes the temporary folder; `leftovers` lists any process still in a namespace.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"


def available() -> tuple[bool, str]:
    if os.geteuid() != 0:
        return False, "not running as root (namespaces and sshd need it)"
    if not Path(SSHD).exists():
        return False, "OpenSSH's sshd is not installed (apt-get install openssh-server; make sysdeps does it)"
    if shutil.which("ssh-keygen") is None or shutil.which("ip") is None:
        return False, "ssh-keygen or ip (iproute2) missing"
    return True, ""


def _run(cmd: list[str], check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, check=check, capture_output=True, text=True)


def _free_block() -> int:
    used = _run(["ip", "-4", "-o", "addr"], check=False).stdout
    for n in range(10, 250):
        if f"10.79.{n}." not in used:
            return n
    raise RuntimeError("no free 10.79.N.0/24 block")


def sweep_stale() -> None:
    """Bridges and namespaces of earlier test runs whose process is gone."""
    for line in _run(["ip", "-o", "link", "show", "type", "bridge"], check=False).stdout.splitlines():
        name = line.split(":")[1].strip().split("@")[0]
        if name.startswith("srtbr") and name[5:].isdigit() and not Path(f"/proc/{name[5:]}").exists():
            _run(["ip", "link", "del", name], check=False)


class SshHosts:
    def __init__(self, names: list[str]) -> None:
        self.names = list(names)
        self.pid = os.getpid()
        self.root = Path(tempfile.mkdtemp(prefix="srt-ssh-"))
        self.bridge = f"srtbr{self.pid}"[:15]
        self.block = 0
        self.addresses: dict[str, str] = {}
        self.sshd: dict[str, subprocess.Popen] = {}
        self.namespaces: list[str] = []
        self.client_key = self.root / "client_ed25519"
        self.known_hosts = self.root / "known_hosts"

    def ns(self, name: str) -> str:
        return f"srt{self.pid}-{name}"

    @property
    def gateway(self) -> str:
        return f"10.79.{self.block}.1"

    def __enter__(self) -> SshHosts:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> None:
        sweep_stale()
        Path("/run/sshd").mkdir(parents=True, exist_ok=True)
        self.block = _free_block()
        _run(["ip", "link", "add", self.bridge, "type", "bridge"])
        _run(["ip", "addr", "add", f"{self.gateway}/24", "dev", self.bridge])
        _run(["ip", "link", "set", self.bridge, "up"])
        _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(self.client_key)])
        for k, name in enumerate(self.names):
            self.add_host(name, k)
        for name in self.names:
            self.wait_listening(name)

    def add_host(self, name: str, k: int) -> None:
        ns = self.ns(name)
        _run(["ip", "netns", "add", ns])
        self.namespaces.append(ns)
        _run(["ip", "-n", ns, "link", "set", "lo", "up"])
        a, b = f"srth{self.pid % 100000}{k}"[:15], f"srtn{self.pid % 100000}{k}"[:15]
        _run(["ip", "link", "add", a, "type", "veth", "peer", "name", b])
        _run(["ip", "link", "set", a, "master", self.bridge])
        _run(["ip", "link", "set", a, "up"])
        _run(["ip", "link", "set", b, "netns", ns, "name", "eth0"])
        address = f"10.79.{self.block}.{k + 2}"
        _run(["ip", "-n", ns, "addr", "add", f"{address}/24", "dev", "eth0"])
        _run(["ip", "-n", ns, "link", "set", "eth0", "up"])
        self.addresses[name] = address
        d = self.root / name
        d.mkdir()
        hostkey = d / "host_ed25519"
        _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(hostkey)])
        (d / "authorized_keys").write_text(Path(f"{self.client_key}.pub").read_text())
        with self.known_hosts.open("a") as f:
            f.write(
                f"{address} {Path(f'{hostkey}.pub').read_text().split(' ')[0]} {Path(f'{hostkey}.pub').read_text().split(' ')[1]}\n"
            )
        config = d / "sshd_config"
        config.write_text(
            "\n".join(
                [
                    f"ListenAddress {address}",
                    "Port 22",
                    f"HostKey {hostkey}",
                    f"PidFile {d / 'sshd.pid'}",
                    f"AuthorizedKeysFile {d / 'authorized_keys'}",
                    "PermitRootLogin prohibit-password",
                    "PasswordAuthentication no",
                    "KbdInteractiveAuthentication no",
                    "UsePAM no",
                    "StrictModes no",
                    "PrintMotd no",
                    "MaxSessions 64",
                    "MaxStartups 64",
                    "Subsystem sftp internal-sftp",
                    "",
                ]
            )
        )
        self._start_sshd(name)

    def _start_sshd(self, name: str) -> None:
        d = self.root / name
        with (d / "sshd.log").open("a") as log:
            self.sshd[name] = subprocess.Popen(
                ["ip", "netns", "exec", self.ns(name), SSHD, "-D", "-e", "-f", str(d / "sshd_config")],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def restart(self, name: str) -> None:
        """Host ``name`` back on the network after `kill` (its sshd started again)."""
        self.sshd[name].wait(timeout=10)
        self._start_sshd(name)
        self.wait_listening(name)

    def wait_listening(self, name: str, timeout_s: float = 20.0) -> None:
        import socket

        deadline = time.monotonic() + timeout_s
        while True:
            with socket.socket() as s:
                s.settimeout(0.5)
                if s.connect_ex((self.addresses[name], 22)) == 0:
                    return
            if self.sshd[name].poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"sshd of {name} did not start: {(self.root / name / 'sshd.log').read_text()[-1000:]}"
                )
            time.sleep(0.05)

    def pids(self, name: str) -> list[int]:
        out = _run(["ip", "netns", "pids", self.ns(name)], check=False).stdout
        return [int(p) for p in out.split()]

    def leftovers(self) -> dict[str, list[str]]:
        """Processes still in each host's namespace other than its sshd: {host: [cmdlines]}."""
        out = {}
        for name in self.names:
            sshd = self.sshd.get(name)
            procs = []
            for pid in self.pids(name):
                if sshd is not None and pid == sshd.pid:
                    continue
                try:
                    cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
                except OSError:
                    continue
                if "sshd" in cmd.split(" ")[0] and ("-D" in cmd or "listener" in cmd):
                    continue  # the server itself (re-exec'd)
                procs.append(f"{pid}: {cmd[:200]}")
            if procs:
                out[name] = procs
        return out

    def kill(self, name: str) -> None:
        """Host ``name`` drops: every process in its namespace, its sshd included, is killed."""
        for _ in range(3):
            for pid in self.pids(name):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.1)

    def inventory(
        self, path: Path, roles: dict[str, list[str]], *, python: str, extra: dict[str, str] | None = None
    ) -> Path:
        """An inventory TOML for these hosts: ``roles[host]``; each host's workdir under the temp folder."""
        lines = [
            "[defaults]",
            'user = "root"',
            f'key = "{self.client_key}"',
            f'known_hosts = "{self.known_hosts}"',
            f'python = "{python}"',
            "",
        ]
        for name, rs in roles.items():
            lines += [
                f"[hosts.{name}]",
                f'address = "{self.addresses[name]}"',
                "roles = [" + ", ".join(f'"{r}"' for r in rs) + "]",
                f'workdir = "{self.root / name / "work"}"',
                *(extra or {}).get(name, "").splitlines(),
                "",
            ]
        path.write_text("\n".join(lines))
        return path

    def close(self) -> None:
        for name in self.names:
            with contextlib.suppress(Exception):
                self.kill(name)
        for p in self.sshd.values():
            with contextlib.suppress(Exception):
                p.wait(timeout=5)
        for ns in self.namespaces:
            _run(["ip", "netns", "del", ns], check=False)
        _run(["ip", "link", "del", self.bridge], check=False)
        shutil.rmtree(self.root, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    """``python -m hil_tests.sshhosts --inventory FILE [HOST=ROLE,ROLE ...]``: keep the hosts up.

    Builds the hosts as the tests do, writes their inventory to FILE (this Python as each host's
    interpreter) and waits until Ctrl-C or SIGTERM, then removes everything. Run `splitrt doctor
    --hosts FILE` and `splitrt hil --hosts FILE ...` against them meanwhile (docs/deploy.md)."""
    import argparse
    import sys

    ap = argparse.ArgumentParser(prog="python -m hil_tests.sshhosts", description=main.__doc__.splitlines()[0])
    ap.add_argument("--inventory", type=Path, required=True, help="where to write the inventory TOML")
    ap.add_argument("hosts", nargs="*", default=["h-rsu=rsu", "h-sv=sv1", "h-cv0=cv0", "h-cv1=cv1"],
                    help="NAME=ROLE[,ROLE] per host (default: h-rsu=rsu h-sv=sv1 h-cv0=cv0 h-cv1=cv1)")  # fmt: skip
    args = ap.parse_args(argv)
    ok, why = available()
    if not ok:
        print(f"sshhosts: {why}", file=sys.stderr)
        return 1
    roles: dict[str, list[str]] = {}
    for spec in args.hosts:
        name, sep, rs = spec.partition("=")
        if not sep or not name or not rs:
            print(f"sshhosts: {spec!r} is not NAME=ROLE[,ROLE]", file=sys.stderr)
            return 2
        roles[name] = rs.split(",")
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    with SshHosts(list(roles)) as h:
        h.inventory(args.inventory, roles, python=sys.executable)
        print(
            f"{len(roles)} hosts up ({', '.join(f'{n} {h.addresses[n]}' for n in roles)}); inventory {args.inventory}"
        )
        print("Ctrl-C to remove them", flush=True)
        try:
            while not stop:
                time.sleep(0.5)
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
