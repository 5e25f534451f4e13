"""Packaging: the four folders install as `splitrt.*` and nothing else, a wheel runs beside another
distribution that owns a top-level ``tools`` package, and the base (device) install is torch-free."""

from __future__ import annotations

import email
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
import tomllib

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = ("edge_runtime", "models", "policy", "tools")
#: run outputs and environments at the top of a checkout, not part of the source
TOP_SKIP = {".git", ".venv", "build", "exports", "runs", "bench", "dist"}


def skip(directory: str, names: list[str]) -> set[str]:
    top = Path(directory) == ROOT
    return {n for n in names if (top and n in TOP_SKIP) or n.endswith((".egg-info", "_cache")) or n == "__pycache__"}


def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_the_package_list_names_every_package_folder():
    listed = set(pyproject()["tool"]["setuptools"]["packages"])
    found = {
        "splitrt." + ".".join(init.parent.relative_to(ROOT).parts)
        for folder in FOLDERS
        for init in (ROOT / folder).rglob("__init__.py")
    }
    assert listed == found


def test_the_base_install_pulls_in_no_torch():
    deps = pyproject()["project"]["dependencies"]
    assert deps and not [d for d in deps if d.lower().startswith(("torch", "torchvision"))]
    assert not [d for d in pyproject()["project"]["optional-dependencies"]["device"] if d.startswith("torch")]


@pytest.fixture(scope="module")
def wheels(tmp_path_factory):
    """splitrt's wheel and the wheel of a small distribution that installs a top-level ``tools``."""
    out = tmp_path_factory.mktemp("wheels")
    build = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(out)]
    source = tmp_path_factory.mktemp("source") / "splitrt"  # a copy: building writes build/ and egg-info
    shutil.copytree(ROOT, source, ignore=skip)
    r = subprocess.run([*build, str(source)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    other = tmp_path_factory.mktemp("othertools")
    (other / "tools").mkdir()
    (other / "tools" / "__init__.py").write_text("OWNER = 'othertools'\n")
    (other / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["setuptools>=68"]\nbuild-backend = "setuptools.build_meta"\n'
        '[project]\nname = "othertools"\nversion = "1.0"\n[tool.setuptools]\npackages = ["tools"]\n'
    )
    r = subprocess.run([*build, str(other)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    splitrt = next(out.glob("splitrt-*.whl"))
    return splitrt, next(out.glob("othertools-*.whl"))


def test_the_wheel_holds_only_the_splitrt_namespace(wheels):
    with zipfile.ZipFile(wheels[0]) as z:
        names = z.namelist()
        meta = email.message_from_bytes(z.read(next(n for n in names if n.endswith(".dist-info/METADATA"))))
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert tops == {"splitrt"}
    assert "splitrt/__init__.py" not in names  # a namespace package: nothing of ours claims `splitrt` alone
    for needed in (
        "splitrt/edge_runtime/node/server.py",
        "splitrt/policy/data/manifests/resnet18.json",
        "splitrt/policy/trained/default/policy.onnx",
        "splitrt/policy/sim/scenario.py",
    ):
        assert needed in names
    base = [r for r in meta.get_all("Requires-Dist") if "extra ==" not in r]
    assert base and not [r for r in base if r.lower().startswith("torch")]


def test_the_wheel_runs_beside_another_top_level_tools(wheels, tmp_path):
    """A fresh venv with both wheels: `import tools` is the other project's, `splitrt` still runs."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    site = Path(
        subprocess.run(
            [str(venv / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    )
    # The dependencies come from this environment's site-packages (a .pth line adds the directory;
    # the .pth files inside it, such as the editable install's finder, are not run).
    (site / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    pip = [sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "-q", "--no-deps"]
    r = subprocess.run([*pip, *map(str, wheels)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    probe = (
        "import tools, splitrt.tools.cli.main as cli, splitrt.policy.sim.profiles as p; "
        "print(tools.OWNER, cli.__file__, p.DATA_DIR.is_dir())"
    )
    r = subprocess.run(
        [str(venv / "bin" / "python"), "-c", probe], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert r.returncode == 0, r.stderr
    owner, cli_file, data = r.stdout.split()
    assert owner == "othertools" and str(site) in cli_file and data == "True"
    out = tmp_path / "eval"
    r = subprocess.run(
        [str(venv / "bin" / "splitrt"), "evaluate", "--methods", "local,greedy", "--slots", "3", "--seeds", "1"]
        + ["--out", str(out)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    assert (out / "summary.json").is_file()
