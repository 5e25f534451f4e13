"""SSH to the inventory's hosts with paramiko: commands, files, clock offsets, and processes that
die with their session.

- `Connection`: one authenticated SSH transport per host (key from the inventory, no agent, no
  ``~/.ssh`` keys tried; host keys pinned by the inventory's ``known_hosts`` when given, else
  accepted on first use). Keep-alives every second, so a host that drops is seen within seconds.
- `RemoteChild`: a `splitrt serve` / `splitrt vehicle` on a host, with the interface of
  `splitrt.tools.processes.Child` that the experiment uses. It runs on a pseudo-terminal and
  ``exec``\\ s the program in place of the login shell, so it is the session's foreground process:
  when the SSH session ends for any reason (the orchestrator stops, crashes, is killed, or the
  network goes) sshd hangs the terminal up and the kernel sends it SIGHUP, which ends it. Its
  output goes to files in the host's run directory; its status file is read through SFTP.
- `clock_offset`: the host's clock minus ours, NTP-style over a persistent channel (the sample
  with the shortest round trip; its half round trip bounds the error).
"""

from __future__ import annotations

import contextlib
import json
import posixpath
import shlex
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from splitrt.edge_runtime.errors import SplitrtError
from splitrt.edge_runtime.lifecycle import read_status
from splitrt.tools.hosts.inventory import Host

CONNECT_TIMEOUT_S = 10.0


def _paramiko():
    try:
        import paramiko
    except ImportError:
        raise SplitrtError(
            "multi-host runs need paramiko: pip install 'splitrt[hosts]' (or pip install paramiko)"
        ) from None
    return paramiko


class Connection:
    """One SSH connection to ``host`` (module docstring)."""

    def __init__(self, host: Host, *, timeout_s: float = CONNECT_TIMEOUT_S) -> None:
        paramiko = _paramiko()
        self.host = host
        self.client = paramiko.SSHClient()
        if host.known_hosts is not None:
            self.client.load_host_keys(str(host.known_hosts))
            self.client.set_missing_host_key_policy(paramiko.RejectPolicy())
        else:
            self.client.set_missing_host_key_policy(paramiko.AutoAddPolicy())
        where = f"host {host.name} ({host.where})"
        try:
            self.client.connect(
                host.address,
                port=host.port,
                username=host.user,
                key_filename=str(host.key),
                timeout=timeout_s,
                banner_timeout=timeout_s,
                auth_timeout=timeout_s,
                allow_agent=False,
                look_for_keys=False,
            )
        except paramiko.AuthenticationException as exc:
            raise SplitrtError(f"{where}: SSH login with key {host.key} refused ({exc})") from None
        except paramiko.BadHostKeyException:
            raise SplitrtError(f"{where}: its host key differs from the one in {host.known_hosts}") from None
        except paramiko.SSHException as exc:
            raise SplitrtError(f"{where}: SSH failed ({exc})") from None
        except (TimeoutError, OSError) as exc:
            raise SplitrtError(f"{where}: unreachable ({exc.strerror or exc})") from None
        transport = self.client.get_transport()
        assert transport is not None
        transport.set_keepalive(1)
        self.transport = transport
        self._sftp = None

    # ---- commands --------------------------------------------------------------------------
    @property
    def alive(self) -> bool:
        return self.transport.is_active()

    @property
    def local_address(self) -> str:
        """Our address as this host sees it (where its connection arrived)."""
        return self.transport.sock.getsockname()[0]

    def run(self, command: str, *, stdin: bytes | None = None, timeout_s: float = 120.0) -> tuple[int, str, str]:
        """Run a shell command; (exit status, stdout, stderr)."""
        try:
            chan = self.transport.open_session(timeout=timeout_s)
            chan.settimeout(timeout_s)
            chan.exec_command(command)
            if stdin is not None:
                chan.sendall(stdin)
            chan.shutdown_write()
            out, err = bytearray(), bytearray()
            while True:
                if chan.recv_ready():
                    out += chan.recv(1 << 16)
                elif chan.recv_stderr_ready():
                    err += chan.recv_stderr(1 << 16)
                elif chan.exit_status_ready() and not chan.recv_ready() and not chan.recv_stderr_ready():
                    break
                else:
                    time.sleep(0.002)
            code = chan.recv_exit_status()
            chan.close()
        except (OSError, EOFError, _paramiko().SSHException) as exc:
            raise SplitrtError(f"host {self.host.name}: SSH command failed ({exc}): {command[:80]}") from None
        return code, out.decode(errors="replace"), err.decode(errors="replace")

    def check(self, command: str, what: str, **kwargs: Any) -> str:
        code, out, err = self.run(command, **kwargs)
        if code != 0:
            raise SplitrtError(f"host {self.host.name}: {what} failed (exit {code}): {(err or out).strip()[-300:]}")
        return out

    def python(self, source: str, args: Any = None, *, what: str, timeout_s: float = 120.0) -> Any:
        """Run ``source`` with the host's Python (``python - ARGS``); its last stdout line as JSON."""
        cmd = f"{shlex.quote(self.host.python)} - {shlex.quote(json.dumps(args if args is not None else {}))}"
        code, out, err = self.run(cmd, stdin=source.encode(), timeout_s=timeout_s)
        lines = out.strip().splitlines()
        if code != 0 or not lines:
            raise SplitrtError(
                f"host {self.host.name}: {what} with {self.host.python} failed (exit {code}): {err.strip()[-300:]}"
            )
        try:
            return json.loads(lines[-1])
        except json.JSONDecodeError:
            raise SplitrtError(f"host {self.host.name}: {what}: not JSON: {lines[-1][:120]!r}") from None

    # ---- files -----------------------------------------------------------------------------
    @property
    def sftp(self):
        if self._sftp is None:
            self._sftp = self.client.open_sftp()
        return self._sftp

    def put(self, local: Path, remote: str) -> None:
        self.sftp.put(str(local), remote)

    def read_bytes(self, remote: str) -> bytes | None:
        try:
            with self.sftp.open(remote, "rb") as f:
                return f.read()
        except FileNotFoundError:
            return None

    def get_tree(self, remote: str, local: Path) -> int:
        """Copy the remote directory ``remote`` into ``local`` (recursively); files copied."""
        import stat

        n = 0
        try:
            entries = self.sftp.listdir_attr(remote)
        except FileNotFoundError:
            return 0
        local.mkdir(parents=True, exist_ok=True)
        for e in entries:
            src = posixpath.join(remote, e.filename)
            if stat.S_ISDIR(e.st_mode or 0):
                n += self.get_tree(src, local / e.filename)
            elif stat.S_ISREG(e.st_mode or 0):
                self.sftp.get(src, str(local / e.filename))
                n += 1
        return n

    # ---- processes -------------------------------------------------------------------------
    def spawn(self, name: str, argv: list[str], run_dir: str, local_logs: Path) -> RemoteChild:
        return RemoteChild(self, name, argv, run_dir, local_logs)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            if self._sftp is not None:
                self._sftp.close()
        with contextlib.suppress(Exception):
            self.client.close()


class RemoteChild:
    """A process on a host that dies with its SSH session (module docstring)."""

    def __init__(self, conn: Connection, name: str, argv: list[str], run_dir: str, local_logs: Path) -> None:
        self.conn = conn
        self.name = name
        self.host = conn.host.name
        logs = posixpath.join(run_dir, "logs")
        self.remote_out = posixpath.join(logs, f"{name}.out")
        self.remote_err = posixpath.join(logs, f"{name}.err")
        self.remote_status = posixpath.join(logs, f"{name}.status")
        self.local_logs = Path(local_logs)
        self.local_logs.mkdir(parents=True, exist_ok=True)
        self.status = self.local_logs / f"{name}.status"
        self.status.unlink(missing_ok=True)
        self.cmd = [*argv, "--status-file", self.remote_status]
        q = shlex.quote
        shell = (
            f"mkdir -p {q(logs)} && rm -f {q(self.remote_status)} && cd {q(run_dir)} && echo PID=$$ && "
            f"exec {' '.join(q(a) for a in self.cmd)} < /dev/null > {q(self.remote_out)} 2> {q(self.remote_err)}"
        )
        try:
            self.chan = conn.transport.open_session(timeout=30)
            self.chan.get_pty()
            self.chan.exec_command(shell)
        except (OSError, EOFError, _paramiko().SSHException) as exc:
            raise SplitrtError(f"host {self.host}: cannot start {name} ({exc})") from None
        self.pid = self._read_pid()
        self.returncode: int | None = None

    def _read_pid(self) -> int:
        buf = b""
        deadline = time.monotonic() + 30
        while b"\n" not in buf.split(b"PID=", 1)[-1] or b"PID=" not in buf:
            if self.chan.recv_ready():
                buf += self.chan.recv(4096)
            elif self.chan.exit_status_ready() or time.monotonic() > deadline:
                raise SplitrtError(
                    f"host {self.host}: {self.name} did not start: {buf.decode(errors='replace')[-300:]}"
                )
            else:
                time.sleep(0.005)
        return int(buf.split(b"PID=", 1)[1].split(b"\n", 1)[0].strip())

    # the Child interface ----------------------------------------------------------------------
    def lost(self) -> bool:
        """The host's SSH session is gone (the host or the network dropped)."""
        return not self.conn.alive

    def alive(self) -> bool:
        if self.returncode is not None:
            return False
        if self.chan.exit_status_ready():
            self.returncode = self.chan.recv_exit_status()
            return False
        if self.lost():
            self.returncode = -1  # unknown: its host dropped
            return False
        return True

    def poll(self) -> int | None:
        return None if self.alive() else self.returncode

    def wait(self, timeout_s: float) -> int | None:
        deadline = time.monotonic() + timeout_s
        while self.alive():
            if time.monotonic() > deadline:
                return None
            time.sleep(0.05)
        return self.returncode

    def wait_ready(self, timeout_s: float) -> dict:
        deadline = time.monotonic() + timeout_s
        while True:
            data = None if self.lost() else self._read(self.remote_status)
            if data:
                self.status.write_bytes(data)
                events = read_status(self.status)
                if events:
                    if events[0]["event"] == "ready":
                        return events[0]
                    raise SplitrtError(f"{self.name} on host {self.host} failed to start: {events[0]['message']}")
            code = self.poll()
            if code is not None:
                raise SplitrtError(
                    f"{self.name} on host {self.host} exited with {code} before it was ready: {self.stderr_tail(800)}"
                )
            if time.monotonic() > deadline:
                raise SplitrtError(f"{self.name} on host {self.host}: not ready within {timeout_s:g} s")
            time.sleep(0.1)

    def _read(self, path: str) -> bytes | None:
        try:
            return self.conn.read_bytes(path)
        except (OSError, EOFError):
            return None

    def stderr_tail(self, n: int = 2000) -> str:
        data = None if self.lost() else self._read(self.remote_err)
        return (data or b"").decode(errors="replace")[-n:] or f"(no stderr from host {self.host})"

    def _signal(self, sig: str) -> None:
        if not self.lost():
            with contextlib.suppress(SplitrtError):
                self.conn.run(f"kill -{sig} {self.pid} 2>/dev/null", timeout_s=10)

    def terminate(self, grace_s: float = 10.0) -> int | None:
        if self.alive():
            self._signal("TERM")
            if self.wait(grace_s) is None:
                self.kill()
        return self.returncode

    def kill(self) -> None:
        if self.alive():
            self._signal("KILL")
            self.wait(10)
        with contextlib.suppress(Exception):
            self.chan.close()  # hangs the terminal up: SIGHUP if it still runs


@dataclass(frozen=True)
class ClockOffset:
    host: str
    offset_s: float  # the host's clock minus ours
    rtt_s: float  # of the sample used; |error| <= rtt / 2
    samples: int

    def as_dict(self) -> dict[str, Any]:
        return {"host": self.host, "offset_s": self.offset_s, "rtt_s": self.rtt_s, "samples": self.samples}


_CLOCK_ECHO = (
    "import sys, time\nfor _ in sys.stdin:\n    sys.stdout.write(repr(time.time()) + '\\n')\n    sys.stdout.flush()\n"
)


def clock_offset(conn: Connection, samples: int = 16) -> ClockOffset:
    """The host's clock minus this machine's (module docstring)."""
    chan = conn.transport.open_session(timeout=30)
    chan.settimeout(30)
    chan.exec_command(f"{shlex.quote(conn.host.python)} -u -c {shlex.quote(_CLOCK_ECHO)}")
    f = chan.makefile("rb")
    best: tuple[float, float] | None = None
    try:
        for _ in range(samples):
            t0 = time.time()
            chan.sendall(b"t\n")
            line = f.readline()
            t1 = time.time()
            if not line:
                raise SplitrtError(f"host {conn.host.name}: the clock probe stopped: {chan.recv_stderr(2000)!r}")
            remote = float(line)
            sample = (remote - (t0 + t1) / 2, t1 - t0)
            if best is None or sample[1] < best[1]:
                best = sample
    finally:
        with contextlib.suppress(Exception):
            chan.shutdown_write()
            chan.close()
    assert best is not None
    return ClockOffset(conn.host.name, best[0], best[1], samples)
