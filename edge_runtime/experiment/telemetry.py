"""MQTT telemetry (paho-mqtt 2.x): the topic schema, a publisher that never blocks inference, and a
view of the latest state of every node.

Topic schema (``<exp>`` = experiment id, ``<id>`` = node or vehicle id), JSON payloads, every one
with ``"schema": 1``, ``"kind"`` and ``"sent_at"`` (sender's wall clock, seconds since the epoch):

| topic | kind | retained | QoS | payload |
|---|---|---|---|---|
| splitrt/<exp>/node/<id>/state | node_state | yes | 0 | an edge server's snapshot (backlog per type in tasks / FLOPs / seconds, allocation, counters) |
| splitrt/<exp>/vehicle/<id>/state | vehicle_state | yes | 0 | local backlog (FLOPs, tasks), position, slot |
| splitrt/<exp>/vehicle/<id>/task | task | no | 1 | one per-task record (the vehicle's JSON-lines record) |
| splitrt/<exp>/controller | controller | no | 1 | per-slot Lyapunov values (L(Q), drift, penalty, drift-plus-penalty, V) |
| splitrt/<exp>/slot | slot | yes | 0 | the slot beacon: slot index, slot start (wall clock), slot length |
| splitrt/<exp>/event | event | no | 1 | experiment events: start/stop, fault windows |

Telemetry never carries tensors: payloads are JSON objects (a numpy array or raw bytes is not
JSON and is refused), no list in them may hold more than ``MAX_LIST_ITEMS`` values (a tensor
flattened into a list is), and `publish` refuses anything over ``MAX_PAYLOAD_BYTES``.

Never blocking. paho runs its network loop in its own thread; `Publisher.publish` only enqueues.
While the broker is unreachable paho keeps QoS-1 messages in a bounded queue
(``max_queued``) and drops QoS-0 ones; every message that could not be handed to paho is
counted in ``dropped`` (and ``dropped_by_kind``), so telemetry loss is visible, never silent.

Brokers. MQTT v3.1.1 is used by default because amqtt (the pure-Python fallback broker) refuses
MQTT v5; every socket sets TCP_NODELAY (``on_socket_open``), without which amqtt delays each QoS-1
message by ~44 ms (ANCHORS.md). Username/password and TLS are options.
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

import paho.mqtt.client as mqtt

from splitrt.edge_runtime.errors import SplitrtError

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
MAX_PAYLOAD_BYTES = 64 * 1024
MAX_LIST_ITEMS = 256  # the longest list a message holds is an observation (2J + 1 values)
KINDS = ("node_state", "vehicle_state", "task", "controller", "slot", "event")


def topic(experiment: str, kind: str, ident: str | None = None) -> str:
    """The topic of a message ``kind`` (see the module table)."""
    if kind == "node_state":
        return f"splitrt/{experiment}/node/{ident}/state"
    if kind == "vehicle_state":
        return f"splitrt/{experiment}/vehicle/{ident}/state"
    if kind == "task":
        return f"splitrt/{experiment}/vehicle/{ident}/task"
    if kind in ("controller", "slot", "event"):
        return f"splitrt/{experiment}/{kind}"
    raise SplitrtError(f"unknown telemetry kind {kind!r} (one of {', '.join(KINDS)})")


def parse_topic(name: str) -> tuple[str, str, str | None]:
    """(experiment, kind, id) of a splitrt topic; the inverse of `topic`."""
    parts = name.split("/")
    if len(parts) < 3 or parts[0] != "splitrt":
        raise SplitrtError(f"{name!r} is not a splitrt topic")
    exp = parts[1]
    if len(parts) == 5 and parts[2] == "node" and parts[4] == "state":
        return exp, "node_state", parts[3]
    if len(parts) == 5 and parts[2] == "vehicle" and parts[4] in ("state", "task"):
        return exp, "vehicle_state" if parts[4] == "state" else "task", parts[3]
    if len(parts) == 3 and parts[2] in ("controller", "slot", "event"):
        return exp, parts[2], None
    raise SplitrtError(f"{name!r} is not a splitrt topic")


def topic_filter(experiment: str, kind: str) -> str:
    """The MQTT subscription that matches every message of ``kind`` (``+`` for the id)."""
    return topic(experiment, kind, "+")


RETAINED = {"node_state", "vehicle_state", "slot"}
QOS = {"node_state": 0, "vehicle_state": 0, "slot": 0, "task": 1, "controller": 1, "event": 1}


def encode(kind: str, body: dict[str, Any]) -> bytes:
    """JSON payload with the schema header; refuses non-JSON data and oversized payloads."""
    try:
        data = json.dumps(
            {"schema": SCHEMA_VERSION, "kind": kind, "sent_at": time.time(), **body},
            separators=(",", ":"),
            allow_nan=False,
        ).encode()
    except (TypeError, ValueError) as exc:
        raise SplitrtError(f"telemetry {kind} payload is not plain JSON: {exc}") from None
    longest = _longest_list(body)
    if longest > MAX_LIST_ITEMS:
        raise SplitrtError(
            f"telemetry {kind} payload holds a list of {longest} values (limit {MAX_LIST_ITEMS}): "
            "telemetry never carries tensors"
        )
    if len(data) > MAX_PAYLOAD_BYTES:
        raise SplitrtError(
            f"telemetry {kind} payload is {len(data)} bytes (limit {MAX_PAYLOAD_BYTES}): "
            "telemetry never carries tensors"
        )
    return data


def _longest_list(obj: Any) -> int:
    if isinstance(obj, dict):
        return max((_longest_list(v) for v in obj.values()), default=0)
    if isinstance(obj, (list, tuple)):
        return max(len(obj), *(_longest_list(v) for v in obj)) if obj else 0
    return 0


def decode(payload: bytes) -> dict[str, Any]:
    """Parse and check a payload; raises SplitrtError naming what is wrong."""
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise SplitrtError(f"telemetry payload of {len(payload)} bytes exceeds {MAX_PAYLOAD_BYTES}")
    try:
        msg = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SplitrtError(f"telemetry payload is not JSON: {exc}") from None
    if not isinstance(msg, dict) or msg.get("schema") != SCHEMA_VERSION or msg.get("kind") not in KINDS:
        raise SplitrtError(
            f"telemetry payload has schema {msg.get('schema') if isinstance(msg, dict) else None!r}, "
            f"expected {SCHEMA_VERSION} with a known kind"
        )
    return msg


@dataclass(frozen=True)
class BrokerAddress:
    """``mqtt://[user:password@]host:port`` (``mqtts://`` for TLS)."""

    host: str
    port: int
    tls: bool = False
    username: str | None = None
    password: str | None = None
    ca_file: str | None = None

    @classmethod
    def parse(cls, url: str, *, ca_file: str | None = None) -> BrokerAddress:
        u = urlparse(url if "://" in url else f"mqtt://{url}")
        if u.scheme not in ("mqtt", "mqtts") or not u.hostname:
            raise SplitrtError(f"--broker {url!r} must look like mqtt://host:port or mqtts://host:port")
        tls = u.scheme == "mqtts"
        return cls(u.hostname, u.port or (8883 if tls else 1883), tls, u.username, u.password, ca_file)

    def url(self) -> str:
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.host}:{self.port}"


def _nodelay(client, userdata, sock) -> None:
    with contextlib.suppress(OSError, AttributeError):  # wrappers without setsockopt
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def make_client(address: BrokerAddress, client_id: str, *, protocol: int = mqtt.MQTTv311) -> mqtt.Client:
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=protocol)
    client.on_socket_open = _nodelay
    if address.username is not None:
        client.username_pw_set(address.username, address.password)
    if address.tls:
        client.tls_set(ca_certs=address.ca_file)
    client.reconnect_delay_set(min_delay=0.2, max_delay=2.0)
    return client


class Publisher:
    """Publishes telemetry of one process; `publish` never blocks and never raises on a broker
    outage (it counts). ``connect_timeout_s`` bounds only the first connection attempt."""

    def __init__(
        self,
        address: BrokerAddress | str,
        experiment: str,
        client_id: str,
        *,
        max_queued: int = 1000,
        connect_timeout_s: float = 5.0,
    ) -> None:
        self.address = BrokerAddress.parse(address) if isinstance(address, str) else address
        self.experiment = experiment
        self.client = make_client(self.address, client_id)
        self.client.max_queued_messages_set(max_queued)
        self.published = 0
        self.dropped = 0
        self.dropped_by_kind: dict[str, int] = {}
        self._connected = threading.Event()
        self.client.on_connect = lambda c, u, f, rc, p: self._connected.set() if not rc.is_failure else None
        self.client.on_disconnect = lambda c, u, f, rc, p: self._connected.clear()
        try:
            self.client.connect_async(self.address.host, self.address.port, keepalive=10)
        except (OSError, ValueError) as exc:
            raise SplitrtError(f"cannot reach MQTT broker {self.address.url()}: {exc}") from None
        self.client.loop_start()
        if connect_timeout_s > 0 and not self._connected.wait(connect_timeout_s):
            log.warning("MQTT broker %s not reachable yet; telemetry is queued/counted until it is", self.address.url())

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def publish(self, kind: str, body: dict[str, Any], ident: str | None = None) -> bool:
        """Hand one message to paho; False (and counted in ``dropped``) if it could not be."""
        data = encode(kind, body)
        qos = QOS[kind]
        if qos == 0 and not self.connected:
            return self._drop(kind)
        try:
            info = self.client.publish(topic(self.experiment, kind, ident), data, qos=qos, retain=kind in RETAINED)
        except (OSError, ValueError, RuntimeError):
            return self._drop(kind)
        if info.rc != mqtt.MQTT_ERR_SUCCESS and not (qos > 0 and info.rc == mqtt.MQTT_ERR_NO_CONN):
            return self._drop(kind)
        self.published += 1
        return True

    def _drop(self, kind: str) -> bool:
        self.dropped += 1
        self.dropped_by_kind[kind] = self.dropped_by_kind.get(kind, 0) + 1
        return False

    def counters(self) -> dict[str, Any]:
        return {
            "published": self.published,
            "dropped": self.dropped,
            "dropped_by_kind": dict(self.dropped_by_kind),
            "connected": self.connected,
        }

    def close(self, flush_s: float = 1.0) -> None:
        """Give queued messages up to ``flush_s`` to leave, then disconnect."""
        deadline = time.monotonic() + flush_s
        while self.connected and self.client.want_write() and time.monotonic() < deadline:
            time.sleep(0.01)
        self.client.disconnect()
        self.client.loop_stop()


class Subscriber:
    """Subscribes to an experiment's topics and calls ``on_message(kind, ident, msg)`` for each
    valid message; invalid ones are counted in ``rejected``. Also keeps the latest state of
    every node and vehicle with its receive time (`latest`)."""

    def __init__(
        self,
        address: BrokerAddress | str,
        experiment: str,
        client_id: str,
        *,
        on_message: Callable[[str, str | None, dict[str, Any]], None] | None = None,
        kinds: tuple[str, ...] = KINDS,
        connect_timeout_s: float = 5.0,
    ) -> None:
        self.address = BrokerAddress.parse(address) if isinstance(address, str) else address
        self.experiment = experiment
        self.callback = on_message
        self.kinds = kinds
        self.rejected = 0
        self.received = 0
        self._latest: dict[tuple[str, str | None], tuple[float, dict[str, Any]]] = {}
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self.client = make_client(self.address, client_id)
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = lambda c, u, mid, rc, p: self._subscribed.set()
        self.client.on_message = self._on_message
        try:
            self.client.connect_async(self.address.host, self.address.port, keepalive=10)
        except (OSError, ValueError) as exc:
            raise SplitrtError(f"cannot reach MQTT broker {self.address.url()}: {exc}") from None
        self.client.loop_start()
        if connect_timeout_s > 0 and not self._subscribed.wait(connect_timeout_s):
            log.warning("MQTT broker %s not reachable yet; the subscriber keeps trying", self.address.url())

    def _on_connect(self, client, userdata, flags, rc, props) -> None:
        if rc.is_failure:
            return
        if set(self.kinds) >= set(KINDS):
            client.subscribe(f"splitrt/{self.experiment}/#", qos=1)
        else:  # only what is asked for: a vehicle need not receive every other vehicle's records
            client.subscribe([(topic_filter(self.experiment, k), 1) for k in self.kinds])

    def _on_message(self, client, userdata, message) -> None:
        try:
            _, kind, ident = parse_topic(message.topic)
            msg = decode(message.payload)
        except SplitrtError as exc:
            self.rejected += 1
            log.debug("rejected telemetry on %s: %s", message.topic, exc)
            return
        if kind not in self.kinds:
            return
        self.received += 1
        if kind in RETAINED:
            with self._lock:
                self._latest[(kind, ident)] = (time.monotonic(), msg)
        if self.callback is not None:
            self.callback(kind, ident, msg)

    def wait_subscribed(self, timeout_s: float) -> bool:
        return self._subscribed.wait(timeout_s)

    def latest(self, kind: str, ident: str | None = None) -> tuple[dict[str, Any] | None, float]:
        """(last message of ``kind``/``ident`` or None, its age in seconds or inf)."""
        with self._lock:
            entry = self._latest.get((kind, ident))
        if entry is None:
            return None, float("inf")
        return entry[1], time.monotonic() - entry[0]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
