"""The experiment's embedded MQTT broker: mosquitto when it is on the PATH, else amqtt in-process.

`start_broker()` returns a running `EmbeddedBroker`; ``stop()`` (or the context manager) ends it.
mosquitto (Debian's package; starts in ~35 ms) runs as a child process with a generated config
that listens on 127.0.0.1 (or the given host) only. amqtt (pure Python, PyPI) runs on its own
asyncio loop in a daemon thread of this process; it speaks MQTT v3.1.1 only, which is what
splitrt.edge_runtime.experiment.telemetry uses.

A secured mosquitto (``users`` and/or ``tls``): ``allow_anonymous false`` with a password file
made by ``mosquitto_passwd``, and a TLS-only listener (``cafile``/``certfile``/``keyfile``); the
URL becomes ``mqtts://``. `make_test_ca` makes a self-signed CA and a server certificate for
127.0.0.1/localhost with openssl, for tests and lab set-ups (a deployment uses its own PKI).

mosquitto is started with ``PR_SET_PDEATHSIG`` like every child of an experiment. Started as root
it would drop to its own user, and the kernel clears that flag on a change of user, so the config
says ``user root`` (which also lets it read the password file and keys in our private temp
directory). As a safety net its config directory carries the owner's pid
(``splitrt-mosq-<pid>-*``), and `sweep_stale_brokers` (run by the next experiment) ends brokers
whose owner is gone.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from splitrt.edge_runtime.errors import SplitrtError

log = logging.getLogger(__name__)

KINDS = ("auto", "mosquitto", "amqtt")
MOSQ_PREFIX = "splitrt-mosq-"


def sweep_stale_brokers() -> list[int]:
    """Kill embedded mosquitto brokers whose owning process is gone; their pids."""
    import psutil

    killed = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        cmd = proc.info.get("cmdline") or []
        conf = next((c for c in cmd if MOSQ_PREFIX in c and c.endswith("mosquitto.conf")), None)
        if conf is None:
            continue
        owner = Path(conf).parent.name[len(MOSQ_PREFIX) :].split("-")[0]
        if owner.isdigit() and psutil.pid_exists(int(owner)) and int(owner) != proc.info["pid"]:
            continue  # its experiment is still running
        try:
            proc.kill()
            proc.wait(5)
            killed.append(proc.info["pid"])
        except psutil.Error:
            continue
        shutil.rmtree(Path(conf).parent, ignore_errors=True)
    return killed


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def wait_listening(host: str, port: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return True
        except OSError:
            time.sleep(0.01)
    return False


@dataclass(frozen=True)
class TlsFiles:
    """PEM files of a TLS listener: the CA that signed the server certificate, the certificate and its key."""

    ca: Path
    cert: Path
    key: Path


def make_test_ca(directory: str | Path, hosts: tuple[str, ...] = ("127.0.0.1", "localhost")) -> TlsFiles:
    """A self-signed CA and a server certificate it signs for ``hosts`` (openssl; 2048-bit RSA)."""
    if shutil.which("openssl") is None:
        raise SplitrtError("openssl is not installed (apt-get install openssl)")
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    ca, ca_key, cert, key, csr = (d / n for n in ("ca.crt", "ca.key", "server.crt", "server.key", "server.csr"))
    san = ",".join(f"IP:{h}" if h.replace(".", "").isdigit() else f"DNS:{h}" for h in hosts)
    (d / "san.ext").write_text(f"subjectAltName={san}\n")
    steps = [
        ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=splitrt test CA"]
        + ["-keyout", str(ca_key), "-out", str(ca)],
        ["req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={hosts[0]}", "-keyout", str(key), "-out", str(csr)],
        ["x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key), "-CAcreateserial", "-days", "2"]
        + ["-extfile", str(d / "san.ext"), "-out", str(cert)],
    ]
    for args in steps:
        r = subprocess.run(["openssl", *args], capture_output=True, text=True, timeout=60)
        if r.returncode != 0:
            raise SplitrtError(f"openssl {args[0]} failed: {r.stderr.strip()[-300:]}")
    return TlsFiles(ca, cert, key)


class EmbeddedBroker:
    """A running broker. ``kind`` is 'mosquitto' or 'amqtt'; ``url`` is mqtt://host:port (mqtts://
    with TLS)."""

    def __init__(self, kind: str, host: str, port: int, *, tls: TlsFiles | None = None) -> None:
        self.kind, self.host, self.port = kind, host, port
        self.tls = tls
        self._proc: subprocess.Popen | None = None
        self._tmp: tempfile.TemporaryDirectory | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._broker = None

    @property
    def url(self) -> str:
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        """The mosquitto child's pid (None for amqtt, which runs in this process)."""
        return self._proc.pid if self._proc is not None else None

    # ---- mosquitto ----------------------------------------------------------------------
    def _start_mosquitto(self, exe: str, netns: str | None, users: dict[str, str] | None = None) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix=f"{MOSQ_PREFIX}{os.getpid()}-")
        conf = Path(self._tmp.name) / "mosquitto.conf"
        lines = [f"listener {self.port} {self.host}", "persistence false", "log_dest stderr", "log_type error"]
        lines.append("max_queued_messages 10000")
        if os.geteuid() == 0:
            # mosquitto started as root drops to user "mosquitto", who cannot read the password
            # file and keys in our private temp directories: the embedded broker keeps the
            # privileges of whoever started the experiment.
            lines.append("user root")
        if users:
            passwd = Path(self._tmp.name) / "passwd"
            tool = shutil.which("mosquitto_passwd")
            if tool is None:
                raise SplitrtError("mosquitto_passwd is not installed (it comes with the mosquitto package)")
            for i, (user, password) in enumerate(users.items()):
                flags = ["-b", "-c"] if i == 0 else ["-b"]
                r = subprocess.run([tool, *flags, str(passwd), user, password], capture_output=True, text=True)
                if r.returncode != 0:
                    raise SplitrtError(f"mosquitto_passwd failed for user {user!r}: {r.stderr.strip()}")
            lines += ["allow_anonymous false", f"password_file {passwd}"]
        else:
            lines.append("allow_anonymous true")
        if self.tls:
            lines += [f"cafile {self.tls.ca}", f"certfile {self.tls.cert}", f"keyfile {self.tls.key}"]
            lines.append("tls_version tlsv1.2")
        conf.write_text("\n".join(lines) + "\n")
        cmd = [exe, "-c", str(conf)]
        if netns:
            cmd = ["ip", "netns", "exec", netns, *cmd]
        from splitrt.tools.processes import die_with_parent  # the broker never outlives the experiment

        self._proc = subprocess.Popen(
            cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True, preexec_fn=die_with_parent
        )

    # ---- amqtt --------------------------------------------------------------------------
    def _start_amqtt(self) -> None:
        try:
            from amqtt.broker import Broker
        except ImportError:
            raise SplitrtError(
                "no MQTT broker: mosquitto is not on the PATH and amqtt is not installed "
                "(apt-get install mosquitto, or pip install amqtt)"
            ) from None
        config = {
            "listeners": {"default": {"type": "tcp", "bind": f"{self.host}:{self.port}"}},
            "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
        }
        self._loop = asyncio.new_event_loop()
        started = threading.Event()
        errors: list[BaseException] = []

        def serve() -> None:
            asyncio.set_event_loop(self._loop)
            try:
                self._broker = Broker(config, loop=self._loop)
                self._loop.run_until_complete(self._broker.start())
            except BaseException as exc:  # reported to the starting thread
                errors.append(exc)
                started.set()
                return
            started.set()
            self._loop.run_forever()

        logging.getLogger("amqtt").setLevel(logging.ERROR)
        self._thread = threading.Thread(target=serve, name="amqtt-broker", daemon=True)
        self._thread.start()
        started.wait(10)
        if errors:
            raise SplitrtError(f"amqtt broker failed to start on {self.host}:{self.port}: {errors[0]}")

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(5)
            self._proc = None
        if self._loop is not None and self._broker is not None:
            try:
                asyncio.run_coroutine_threadsafe(self._broker.shutdown(), self._loop).result(5)
            except Exception as exc:  # already stopped or loop gone: nothing left to release
                log.debug("amqtt shutdown: %s", exc)
            self._loop.call_soon_threadsafe(self._loop.stop)
            if self._thread is not None:
                self._thread.join(5)
            self._loop = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def kill(self) -> None:
        """Stop abruptly (fault injection): the process is killed, or amqtt's loop stopped."""
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait(5)
            self._proc = None
        else:
            self.stop()

    @property
    def alive(self) -> bool:
        if self._proc is not None:
            return self._proc.poll() is None
        return self._thread is not None and self._thread.is_alive()

    def __enter__(self) -> EmbeddedBroker:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def mosquitto_path() -> str | None:
    return shutil.which("mosquitto") or next((p for p in ("/usr/sbin/mosquitto",) if Path(p).exists()), None)


def start_broker(
    kind: str = "auto",
    host: str = "127.0.0.1",
    port: int | None = None,
    netns: str | None = None,
    timeout_s: float = 10.0,
    *,
    users: dict[str, str] | None = None,
    tls: TlsFiles | None = None,
) -> EmbeddedBroker:
    """Start an embedded broker and wait until it accepts connections. ``users`` (name ->
    password) turns anonymous access off; ``tls`` makes the listener TLS-only (mosquitto only)."""
    if kind not in KINDS:
        raise SplitrtError(f"broker kind {kind!r} is not one of {', '.join(KINDS)}")
    exe = mosquitto_path()
    if (kind == "mosquitto" or users or tls) and exe is None:
        raise SplitrtError("mosquitto is not installed (apt-get install mosquitto); a secured broker needs it")
    use = "mosquitto" if (kind == "mosquitto" or users or tls or (kind == "auto" and exe)) else "amqtt"
    if use == "amqtt" and netns:
        raise SplitrtError("the in-process amqtt broker cannot run inside a network namespace; install mosquitto")
    broker = EmbeddedBroker(use, host, port or free_port(host if not netns else "127.0.0.1"), tls=tls)
    if use == "mosquitto":
        broker._start_mosquitto(exe, netns, users)
    else:
        broker._start_amqtt()
    if netns is None and not wait_listening(broker.host, broker.port, timeout_s):
        err = (
            broker._proc.stderr.read().decode(errors="replace")[-300:]
            if broker._proc and broker._proc.poll() is not None
            else ""
        )
        broker.stop()
        raise SplitrtError(f"{use} broker did not start listening on {broker.host}:{broker.port} {err}".strip())
    log.info("embedded %s broker at %s", use, broker.url)
    return broker
