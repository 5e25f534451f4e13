"""Telemetry through a mosquitto that wants a password and speaks only TLS (self-signed CA)."""

from __future__ import annotations

import shutil
import threading

import pytest

from hil_tests.conftest import wait_for
from splitrt.edge_runtime.experiment.telemetry import BrokerAddress, Publisher, Subscriber, make_client
from splitrt.tools.hil.broker import make_test_ca, mosquitto_path, start_broker
from tests.edge_runtime.link.test_security import Tap

MISSING = [t for t, found in (("mosquitto", mosquitto_path()), ("openssl", shutil.which("openssl"))) if not found]
pytestmark = pytest.mark.skipif(
    bool(MISSING), reason=f"{' and '.join(MISSING)} not installed (apt-get install mosquitto openssl)"
)
USERS = {"rsu": "rsu-secret", "cv0": "cv0-secret"}


@pytest.fixture(scope="module")
def secured(tmp_path_factory):
    tls = make_test_ca(tmp_path_factory.mktemp("ca"))
    broker = start_broker("mosquitto", users=USERS, tls=tls)
    yield broker, tls
    broker.stop()


def connect_result(address: BrokerAddress, timeout_s: float = 5.0) -> str:
    """How a plain paho client configured by `make_client` fares: 'ok', the broker's refusal, or 'no connection'."""
    client = make_client(address, "probe")
    outcome: list[str] = []
    done = threading.Event()

    def on_connect(c, u, flags, rc, props):
        outcome.append("ok" if not rc.is_failure else f"refused: {rc}")
        done.set()

    client.on_connect = on_connect
    client.on_connect_fail = lambda c, u: None
    try:
        client.connect_async(address.host, address.port, keepalive=5)
        client.loop_start()
        done.wait(timeout_s)
    finally:
        client.disconnect()
        client.loop_stop()
    return outcome[0] if outcome else "no connection"


@pytest.mark.timeout(60)
def test_authenticated_tls_telemetry_round_trips(secured):
    broker, tls = secured
    url = f"mqtts://cv0:{USERS['cv0']}@{broker.host}:{broker.port}"
    got = []
    sub = Subscriber(
        BrokerAddress.parse(url.replace("cv0:cv0-secret", f"rsu:{USERS['rsu']}"), ca_file=str(tls.ca)),
        "exp",
        "sub",
        on_message=lambda k, i, m: got.append(m),
    )
    pub = Publisher(BrokerAddress.parse(url, ca_file=str(tls.ca)), "exp", "pub")
    try:
        assert sub.wait_subscribed(10) and wait_for(lambda: pub.connected)
        assert pub.publish("task", {"task_id": "cv0-1", "total_s": 0.2}, "cv0")
        assert wait_for(lambda: len(got) == 1)
        assert got[0]["task_id"] == "cv0-1" and pub.dropped == 0
    finally:
        pub.close()
        sub.close()


@pytest.mark.timeout(60)
def test_wrong_password_anonymous_plaintext_and_unknown_ca_are_refused(secured, tmp_path):
    broker, tls = secured
    host, port = broker.host, broker.port
    ok = BrokerAddress(host, port, True, "cv0", USERS["cv0"], str(tls.ca))
    assert connect_result(ok) == "ok"  # the control: this client config does connect
    assert connect_result(BrokerAddress(host, port, True, "cv0", "guess", str(tls.ca))).startswith("refused")
    assert connect_result(BrokerAddress(host, port, True, None, None, str(tls.ca))).startswith("refused")
    # MQTT without TLS to the TLS-only listener: no MQTT session at all
    assert connect_result(BrokerAddress(host, port, False, "cv0", USERS["cv0"])) == "no connection"
    # TLS with another CA: the client does not trust the broker's certificate
    other = make_test_ca(tmp_path / "other-ca")
    assert connect_result(BrokerAddress(host, port, True, "cv0", USERS["cv0"], str(other.ca))) == "no connection"


@pytest.mark.timeout(60)
def test_telemetry_is_encrypted_on_the_wire(secured):
    broker, tls = secured
    tap = Tap(broker.port)  # publisher -> tap -> broker
    address = BrokerAddress(broker.host, tap.port, True, "cv0", USERS["cv0"], str(tls.ca))
    got = []
    sub = Subscriber(
        BrokerAddress(broker.host, broker.port, True, "rsu", USERS["rsu"], str(tls.ca)),
        "exp",
        "sub",
        on_message=lambda k, i, m: got.append(m),
    )
    pub = Publisher(address, "exp", "pub")
    try:
        assert sub.wait_subscribed(10) and wait_for(lambda: pub.connected)
        assert pub.publish("event", {"event": "TELEMETRY-MARKER-77"})
        assert wait_for(lambda: len(got) == 1)
        with tap.lock:
            seen = bytes(tap.seen)
        assert len(seen) > 1000  # the TLS handshake and the message went through the tap
        for secret in (b"TELEMETRY-MARKER-77", USERS["cv0"].encode(), b"splitrt/exp/event"):
            assert secret not in seen
    finally:
        pub.close()
        sub.close()
        tap.close()
