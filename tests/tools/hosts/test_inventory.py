"""The inventory: what a good file gives, and one named error per mistake."""

from __future__ import annotations

from pathlib import Path

import pytest

from splitrt.edge_runtime.errors import SplitrtError
from splitrt.tools.hosts.checks import node_ports
from splitrt.tools.hosts.inventory import check_roles, load_inventory

ROLES = ["rsu", "sv1", "cv0", "cv1"]


def write(tmp_path: Path, body: str) -> Path:
    (tmp_path / "id_ed25519").write_text("not read here\n")
    path = tmp_path / "hosts.toml"
    path.write_text(body)
    return path


GOOD = """
[defaults]
user = "pi"
key = "id_ed25519"
python = "/opt/splitrt/bin/python"

[orchestrator]
address = "192.168.1.10"

[hosts.rsu-box]
address = "192.168.1.20"
roles = ["rsu", "sv1"]
threads = 4
provider = "cuda"
speed_factor = 1
node_port = 6000

[hosts.pi1]
address = "192.168.1.31"
roles = ["cv0"]
user = "ubuntu"
port = 2222

[hosts.pi2]
address = "192.168.1.32"
roles = ["cv1"]
interface = "wlan0"
"""


def test_a_good_inventory_places_every_role(tmp_path):
    inv = load_inventory(write(tmp_path, GOOD))
    check_roles(inv, ROLES)
    assert inv.orchestrator_address == "192.168.1.10"
    box, pi1, pi2 = inv.hosts
    assert inv.host_of("sv1") is box and inv.host_of("cv0") is pi1 and inv.host_of("cv1") is pi2
    assert box.key == (tmp_path / "id_ed25519").resolve() and box.user == "pi" and pi1.user == "ubuntu"
    assert (box.threads, box.provider, box.speed_factor, pi2.interface) == (4, "cuda", 1.0, "wlan0")
    assert pi1.where == "ubuntu@192.168.1.31:2222" and pi1.python == "/opt/splitrt/bin/python"
    assert node_ports(box) == {"rsu": 6000, "sv1": 6001} and node_ports(pi1) == {}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (('roles = ["cv1"]', 'roles = ["cv1", "bus3"]'), "host pi2: unknown role 'bus3'"),
        (('roles = ["cv1"]', 'roles = ["cv0"]'), "role cv0 is given twice (hosts pi1 and pi2)"),
        (('key = "id_ed25519"', ""), "host rsu-box: no key"),
        (('key = "id_ed25519"', 'key = "missing_key"'), "host rsu-box: key"),
        (('address = "192.168.1.31"', ""), "host pi1: no address"),
        (("port = 2222", 'port = "ssh"'), "host pi1: port must be a int"),
        (("port = 2222", "port = 70000"), "host pi1: port must be in [1, 65535]"),
        (('provider = "cuda"', 'provider = "rocm"'), "host rsu-box: provider must be one of cpu, cuda, tensorrt"),
        (("threads = 4", "thread = 4"), "host rsu-box: unknown key(s) thread"),
        (("[orchestrator]", "[orchestra]"), "unknown section(s) orchestra"),
        (('roles = ["cv0"]', "roles = []"), "host pi1: roles must be a non-empty list"),
    ],
)
def test_each_mistake_is_one_error_naming_it(tmp_path, change, message):
    with pytest.raises(SplitrtError, match="--hosts .*hosts.toml: .*" + _escape(message)):
        load_inventory(write(tmp_path, GOOD.replace(*change)))


def _escape(text: str) -> str:
    import re

    return re.escape(text)


def test_roles_against_the_scenario(tmp_path):
    inv = load_inventory(write(tmp_path, GOOD))
    with pytest.raises(SplitrtError, match="no host has role\\(s\\) sv2, cv2"):
        check_roles(inv, ["rsu", "sv1", "sv2", "cv0", "cv1", "cv2"])
    with pytest.raises(SplitrtError, match="host rsu-box has role sv1, which this scenario does not have"):
        check_roles(inv, ["rsu", "cv0", "cv1"])


def test_unreadable_files(tmp_path):
    with pytest.raises(SplitrtError, match="no such file"):
        load_inventory(tmp_path / "none.toml")
    with pytest.raises(SplitrtError, match="not valid TOML"):
        load_inventory(write(tmp_path, "[hosts.a\n"))
    with pytest.raises(SplitrtError, match="no \\[hosts.NAME\\] table"):
        load_inventory(write(tmp_path, "[defaults]\nport = 22\n"))
