"""Security of the tensor link: ZeroMQ CURVE keys, the node's allow list, connection events.

Two modes (`describe()` reports which, and the snapshot and the task records carry it):

``plain``  no authentication, no encryption (ZeroMQ's NULL mechanism). For a lab bench only: anyone
           who reaches the port can submit tasks and read every tensor on the wire. Logged as a
           warning at start.
``curve``  CurveZMQ (Curve25519 key exchange, XSalsa20-Poly1305 per message): every frame is
           encrypted and authenticated, and the node accepts a client only if its long-term
           public key is in the node's allow list (a directory of public key files, checked by
           a ZAP handler, pyzmq's `ThreadAuthenticator`). The vehicle pins the node's public key,
           so it cannot be talked into serving a rogue node either.

Key files are ZeroMQ certificates (`zmq.auth.create_certificates`): ``NAME.key`` holds the public
key (share it), ``NAME.key_secret`` the public and the secret key (keep it on the device, mode
0600). ``splitrt keys --out DIR --name NAME`` makes a pair.

`SocketEvents` counts a socket's connection events through a ZeroMQ monitor socket: the node
counts refused handshakes (``auth_failures``: a key not in the allow list; ``handshake_failures``:
a mechanism mismatch or garbage) and peers dropped by libzmq (``disconnects``, e.g. a frame over
``MAXMSGSIZE``); the vehicle reads its last handshake failure to give a refused offload its
reason.
"""

from __future__ import annotations

import itertools
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import zmq
import zmq.auth
from zmq.utils.monitor import parse_monitor_message

from splitrt.edge_runtime.errors import SplitrtError

log = logging.getLogger(__name__)

MODES = ("plain", "curve")
PUBLIC_SUFFIX = ".key"
SECRET_SUFFIX = ".key_secret"


# ---- key files ------------------------------------------------------------------------------


def create_key_pair(directory: str | Path, name: str, *, force: bool = False) -> tuple[Path, Path]:
    """Write ``DIR/NAME.key`` (public) and ``DIR/NAME.key_secret`` (secret, mode 0600)."""
    if not name or Path(name).name != name or name.startswith("."):
        raise SplitrtError(f"--name {name!r} must be a plain file name (letters, digits, - and _)")
    if not zmq.has("curve"):
        raise SplitrtError("this libzmq was built without CURVE support (zmq.has('curve') is False)")
    directory = Path(directory)
    public, secret = directory / f"{name}{PUBLIC_SUFFIX}", directory / f"{name}{SECRET_SUFFIX}"
    existing = [str(p) for p in (public, secret) if p.exists()]
    if existing and not force:
        raise SplitrtError(f"key file(s) {', '.join(existing)} exist already (use --force to replace them)")
    umask = os.umask(0o077)  # the secret file is never readable by others, not even briefly
    try:
        directory.mkdir(parents=True, exist_ok=True)
        made_public, made_secret = zmq.auth.create_certificates(str(directory), name)
        os.chmod(made_public, 0o644)
    except OSError as exc:
        raise SplitrtError(f"cannot write keys into {directory}: {exc.strerror or exc}") from None
    finally:
        os.umask(umask)
    return Path(made_public), Path(made_secret)


def load_public_key(path: str | Path, flag: str) -> bytes:
    """The Z85 public key in a certificate file (public or secret one)."""
    public, _ = _load(path, flag)
    return public


def load_secret_pair(path: str | Path, flag: str) -> tuple[bytes, bytes]:
    """(public, secret) Z85 keys from a ``.key_secret`` file."""
    public, secret = _load(path, flag)
    if not secret:
        raise SplitrtError(f"{flag} {path}: holds no secret key (give the NAME.key_secret file, not NAME.key)")
    return public, secret


def _load(path: str | Path, flag: str) -> tuple[bytes, bytes | None]:
    path = Path(path)
    if not path.is_file():
        raise SplitrtError(f"{flag} {path}: no such key file (make one with `splitrt keys`)")
    try:
        public, secret = zmq.auth.load_certificate(str(path))
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise SplitrtError(f"{flag} {path}: not a ZeroMQ certificate ({type(exc).__name__}: {exc})") from None
    if not public or len(public) != 40:
        raise SplitrtError(f"{flag} {path}: no valid public key in it")
    return public, secret


def allowed_keys(directory: str | Path) -> dict[str, bytes]:
    """file name -> public key of every ``*.key`` file in the allow-list directory."""
    directory = Path(directory)
    if not directory.is_dir():
        raise SplitrtError(f"--allow {directory}: not a directory (put the allowed clients' NAME.key files there)")
    keys = {p.name: load_public_key(p, "--allow") for p in sorted(directory.glob(f"*{PUBLIC_SUFFIX}"))}
    if not keys:
        raise SplitrtError(f"--allow {directory}: holds no public key files (*{PUBLIC_SUFFIX}): nobody could connect")
    return keys


# ---- the node's side ------------------------------------------------------------------------


@dataclass
class ServerSecurity:
    """How a node protects its ROUTER socket; ``mode`` plain or curve (see module docstring)."""

    mode: str = "plain"
    public_key: bytes = b""
    secret_key: bytes = b""
    allow_dir: Path | None = None
    allowed: dict[str, bytes] = field(default_factory=dict)
    _auth: Any = None

    @classmethod
    def from_files(cls, curve_secret: str | Path | None, allow: str | Path | None) -> ServerSecurity:
        if curve_secret is None:
            if allow is not None:
                raise SplitrtError("--allow needs --curve-secret (the node's own key pair)")
            return cls()
        if allow is None:
            raise SplitrtError("--curve-secret needs --allow DIR (the public keys of the vehicles to serve)")
        public, secret = load_secret_pair(curve_secret, "--curve-secret")
        return cls("curve", public, secret, Path(allow), allowed_keys(allow))

    def context(self) -> zmq.Context:
        """The context the node's sockets live in: CURVE gets its own, since a ZAP handler (the
        allow list) is per context."""
        return zmq.Context() if self.mode == "curve" else zmq.Context.instance()

    def start(self, ctx: zmq.Context) -> None:
        """Start the allow-list check (ZAP handler) on ``ctx``; a no-op in plain mode."""
        if self.mode != "curve":
            return
        from zmq.auth.thread import ThreadAuthenticator

        self._auth = ThreadAuthenticator(ctx, log=logging.getLogger("splitrt.zap"))
        self._auth.start()
        self._auth.configure_curve(domain="*", location=str(self.allow_dir))
        log.info("CURVE: serving %d allowed client key(s) from %s", len(self.allowed), self.allow_dir)

    def apply(self, sock: zmq.Socket) -> None:
        if self.mode == "curve":
            sock.curve_secretkey = self.secret_key
            sock.curve_publickey = self.public_key
            sock.curve_server = True

    def stop(self) -> None:
        if self._auth is not None:
            self._auth.stop()
            self._auth = None

    def describe(self) -> dict[str, Any]:
        curve = self.mode == "curve"
        return {
            "mode": self.mode,
            "authenticated": curve,
            "encrypted": curve,
            "allowed_keys": len(self.allowed) if curve else None,
            "public_key": self.public_key.decode() if curve else None,
        }


def warn_plain(who: str, flag: str) -> None:
    """The log line that says a link runs in plain mode (once, after a successful set-up)."""
    log.warning("%s: plain link: UNAUTHENTICATED and unencrypted, lab use only (see %s)", who, flag)


# ---- the vehicle's side ---------------------------------------------------------------------


@dataclass(frozen=True)
class ClientSecurity:
    """A vehicle's CURVE keys and the pinned public key of every edge node (plain: none)."""

    mode: str = "plain"
    public_key: bytes = b""
    secret_key: bytes = b""
    server_keys: tuple[bytes, ...] = ()

    @classmethod
    def from_files(
        cls, curve_secret: str | Path | None, server_keys: list[str | Path] | tuple = (), n_edges: int = 1
    ) -> ClientSecurity:
        server_keys = list(server_keys or [])
        if curve_secret is None:
            if server_keys:
                raise SplitrtError("--server-key needs --curve-secret (this vehicle's own key pair)")
            return cls()
        if not server_keys:
            raise SplitrtError("--curve-secret needs --server-key FILE (the edge node's public key)")
        if len(server_keys) not in (1, n_edges):
            raise SplitrtError(
                f"give one --server-key for all edges or one per --edge ({n_edges}), got {len(server_keys)}"
            )
        public, secret = load_secret_pair(curve_secret, "--curve-secret")
        keys = tuple(load_public_key(k, "--server-key") for k in server_keys)
        return cls("curve", public, secret, keys * n_edges if len(keys) == 1 else keys)

    def apply(self, sock: zmq.Socket, node: int) -> None:
        if self.mode == "curve":
            sock.curve_secretkey = self.secret_key
            sock.curve_publickey = self.public_key
            sock.curve_serverkey = self.server_keys[node]


# ---- connection events ----------------------------------------------------------------------

_COUNTED = {
    zmq.EVENT_ACCEPTED: "accepted",
    zmq.EVENT_CONNECTED: "connected",
    zmq.EVENT_DISCONNECTED: "disconnects",
    zmq.EVENT_HANDSHAKE_SUCCEEDED: "handshakes",
    zmq.EVENT_HANDSHAKE_FAILED_AUTH: "auth_failures",
    zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL: "handshake_failures",
    zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL: "handshake_failures",
}
_MONITOR_IDS = itertools.count()
EVENT_KEYS = ("accepted", "connected", "disconnects", "handshakes", "auth_failures", "handshake_failures")


class SocketEvents:
    """Counts one socket's connection events (a ZeroMQ monitor on an inproc PAIR socket).

    Call `drain()` from the thread that owns the socket's poll loop (or lazily): the monitor
    queues events until read. ``last_failure`` is the latest handshake failure as a sentence
    (cleared by a later successful handshake).
    """

    def __init__(self, sock: zmq.Socket) -> None:
        # A unique endpoint: pyzmq's default names it after the socket's fd, which a socket
        # closed a moment ago may still hold (its close lingers), and the new monitor then
        # attaches to the old one's endpoint.
        addr = f"inproc://splitrt-monitor-{next(_MONITOR_IDS)}-{id(self):x}"
        self.socket = sock.get_monitor_socket(addr=addr)
        self._monitored = sock
        self.counts = dict.fromkeys(EVENT_KEYS, 0)
        self.last_failure = ""

    def drain(self) -> None:
        while True:
            try:
                frames = self.socket.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            except zmq.ZMQError:  # the monitored socket is gone
                return
            event = parse_monitor_message(frames)
            key = _COUNTED.get(event["event"])
            if key is None:
                continue
            self.counts[key] += 1
            if key == "handshakes":
                self.last_failure = ""
            elif key == "auth_failures":
                self.last_failure = (
                    f"refused: the node rejected this vehicle's CURVE key (ZAP status {event['value']}; "
                    "not in its allow list)"
                )
            elif key == "handshake_failures":
                self.last_failure = "refused: security handshake failed (CURVE keys or plain/CURVE mode do not match)"

    def close(self) -> None:
        """Stop monitoring (call before closing the monitored socket)."""
        if not self._monitored.closed:
            self._monitored.disable_monitor()
        self.socket.close(0)
