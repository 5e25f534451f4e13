"""Network namespaces + tc shaping really limit throughput, follow rate changes, and clean up."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from splitrt.tools.hil.linkem import Topology, availability, list_namespaces, payload_rate_to_wire

OK, WHY = availability()
pytestmark = pytest.mark.skipif(not OK, reason=f"link emulation unavailable: {WHY}")
BULK = str(Path(__file__).with_name("bulk_transfer.py"))


def measure(topo: Topology, link, seconds: float = 1.5) -> float:
    srv = subprocess.Popen(
        topo.exec_prefix("rsu") + [sys.executable, BULK, "server", link.ip_b, "5001"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert srv.stdout.readline().strip() == "ready"
        subprocess.run(
            topo.exec_prefix("cv0") + [sys.executable, BULK, "client", link.ip_b, "5001", str(seconds)],
            check=True,
            timeout=30,
        )
        return float(srv.stdout.readline())
    finally:
        srv.kill()
        srv.wait()


@pytest.mark.timeout(120)
def test_shaping_limits_throughput_and_follows_rate_changes():
    with Topology() as topo:
        topo.add_namespace("rsu")
        topo.add_namespace("cv0")
        link = topo.add_link("cv0", "rsu")
        for rate in (20e6, 80e6):  # a rate change "between slots"
            topo.set_rate(link, rate)
            got = measure(topo, link)
            assert 0.9 * rate <= got <= 1.05 * rate, f"set {rate:.0f} bit/s, measured {got:.0f}"
        assert any("tbf" in q and "to-cv0" in q for q in topo.qdiscs())
        name = topo.tag
    assert not [ns for ns in list_namespaces() if ns.startswith(name)]


def qdisc_rate_bps(ns: str, dev: str) -> float:
    """The tbf rate on ``dev`` in namespace ``ns`` (tc's JSON gives bytes per second)."""
    out = subprocess.run(["tc", "-j", "-n", ns, "qdisc", "show", "dev", dev], capture_output=True, text=True).stdout
    (tbf,) = [q for q in json.loads(out) if q["kind"] == "tbf"]
    return 8.0 * tbf["options"]["rate"]


def probe(topo: Topology, ip: str) -> str:
    """Name of the exception a TCP connect from cv0 to ``ip`` raises."""
    code = (
        "import socket\n"
        "try:\n"
        f"    socket.create_connection(({ip!r}, 9), timeout=1)\n"
        "    print('connected')\n"
        "except OSError as e:\n"
        "    print(type(e).__name__)\n"
    )
    r = subprocess.run(
        topo.exec_prefix("cv0") + [sys.executable, "-c", code], capture_output=True, text=True, timeout=20
    )
    return r.stdout.strip()


@pytest.mark.timeout(60)
def test_blackout_and_cleanup_after_an_exception():
    with pytest.raises(RuntimeError), Topology() as topo:
        topo.add_namespace("rsu")
        topo.add_namespace("cv0")
        link = topo.add_link("cv0", "rsu")
        assert probe(topo, link.ip_b) == "ConnectionRefusedError"  # reachable, nobody listening
        topo.set_down(link)
        assert probe(topo, link.ip_b) != "ConnectionRefusedError"  # blacked out: unreachable
        topo.set_down(link, down=False)
        assert probe(topo, link.ip_b) == "ConnectionRefusedError"
        tag = topo.tag
        raise RuntimeError("crash inside the experiment")
    assert not [ns for ns in list_namespaces() if ns.startswith(tag)]


UDP_COUNT = (
    "import socket, sys, time\n"
    "mode, ip, n = sys.argv[1], sys.argv[2], int(sys.argv[3])\n"
    "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
    "if mode == 'recv':\n"
    "    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)\n"
    "    s.bind((ip, 5002)); s.settimeout(2.0); print('ready', flush=True); got = 0\n"
    "    try:\n"
    "        while True:\n"
    "            s.recv(64); got += 1\n"
    "    except socket.timeout:\n"
    "        print(got, flush=True)\n"
    "else:\n"
    "    for i in range(n):\n"
    "        s.sendto(b'x' * 32, (ip, 5002)); time.sleep(0.0003)\n"
)


def udp_delivered(topo: Topology, link, n: int) -> int:
    """Datagrams of ``n`` sent from cv0 that arrive in rsu."""
    rcv = subprocess.Popen(
        topo.exec_prefix("rsu") + [sys.executable, "-c", UDP_COUNT, "recv", link.ip_b, "0"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert rcv.stdout.readline().strip() == "ready"
        subprocess.run(
            topo.exec_prefix("cv0") + [sys.executable, "-c", UDP_COUNT, "send", link.ip_b, str(n)],
            check=True,
            timeout=60,
        )
        return int(rcv.stdout.readline())
    finally:
        rcv.kill()
        rcv.wait()


@pytest.mark.timeout(120)
@pytest.mark.parametrize("method", ["nftables", "iptables"])
def test_random_loss_drops_about_the_fraction_asked_and_is_removed(method):
    tool = "nft" if method == "nftables" else "iptables"
    if shutil.which(tool) is None:
        pytest.skip(f"{tool} is not installed (apt-get install {method})")
    with Topology() as topo:
        topo.add_namespace("rsu")
        topo.add_namespace("cv0")
        link = topo.add_link("cv0", "rsu")
        n = 2000
        assert topo.set_loss(link, 0.10, method=method) == method
        lost = 1 - udp_delivered(topo, link, n) / n
        assert 0.06 <= lost <= 0.14, lost  # binomial: 10% +- 4.5 standard deviations
        topo.set_loss(link, 0.0)
        assert udp_delivered(topo, link, n) == n


@pytest.mark.timeout(120)
def test_batched_per_slot_updates_shape_every_link_and_host_links_reach_the_root():
    """`set_rates` (one tc batch per namespace, what hil runs every slot) puts each link's rate on
    both of its ends, the next slot's update replaces it, and the payload rate survives the
    headers; an unshaped host link joins a namespace to the root namespace."""
    with Topology() as topo:
        for name in ("rsu", "cv0", "cv1"):
            topo.add_namespace(name)
        links = [topo.add_link("cv0", "rsu"), topo.add_link("cv1", "rsu")]
        host = topo.add_host_link("cv0")
        for slot_rates in ({"cv0-rsu": 30e6, "cv1-rsu": 60e6}, {"cv0-rsu": 60e6, "cv1-rsu": 15e6}):
            topo.set_rates({k: payload_rate_to_wire(v) for k, v in slot_rates.items()})
            for link in links:  # both ends of every link carry this slot's wire rate
                for ns, dev in ((link.ns_a, link.dev_a), (link.ns_b, link.dev_b)):
                    assert qdisc_rate_bps(ns, dev) == pytest.approx(
                        payload_rate_to_wire(slot_rates[link.name]), rel=1e-3
                    )
            got = measure(topo, links[0])  # TCP payload goodput of the cv0 link
            assert 0.9 * slot_rates["cv0-rsu"] <= got <= 1.05 * slot_rates["cv0-rsu"]
        assert probe(topo, host.ip_a) == "ConnectionRefusedError"  # the root side answers: reachable
        tag = topo.tag
    assert not [ns for ns in list_namespaces() if ns.startswith(tag)]
