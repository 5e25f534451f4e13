"""Every verb, every kind of user mistake: a one-line error naming the problem and exit 1 (argparse's
own usage errors: exit 2), never a traceback. Each case runs `splitrt` in a subprocess."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from splitrt.edge_runtime.link.security import create_key_pair
from splitrt.models.segmenter import segment_model
from tests.onnx_graphs import chain_model

ROOT = Path(__file__).resolve().parents[3]
DEAD = "tcp://127.0.0.1:9"


@pytest.fixture(scope="module")
def w(tmp_path_factory) -> Path:
    """A workspace of good and broken files: exports, manifests, keys, profiles, policies."""
    root = tmp_path_factory.mktemp("mistakes")
    segment_model(chain_model(), root / "chain", name="chain", source={}, granularity="op")
    segment_model(chain_model(seed=1), root / "other", name="chain", source={}, granularity="op")
    shutil.copytree(root / "chain", root / "tampered")
    seg = root / "tampered" / "seg_001.onnx"
    data = bytearray(seg.read_bytes())
    data[-10] ^= 0xFF  # one flipped byte in the weights
    seg.write_bytes(bytes(data))
    manifest = json.loads((root / "chain" / "manifest.json").read_text())
    variants = {
        "no_segments": {k: v for k, v in manifest.items() if k != "segments"},
        "version_2": {**manifest, "format_version": 2},
        "bad_cut": {**manifest, "cuts": [*manifest["cuts"][:1], {**manifest["cuts"][1], "shape": "abc"}]},
    }
    for name, data_ in variants.items():
        shutil.copytree(root / "chain", root / name)
        (root / name / "manifest.json").write_text(json.dumps(data_))
    (root / "not_json").mkdir()
    (root / "not_json" / "manifest.json").write_text("{not json")
    (root / "no_files").mkdir()
    shutil.copy(root / "chain" / "manifest.json", root / "no_files")
    # a profile of the other export, presented as a vehicle's profile of every paper model
    other_profile = root / "other_profile.json"
    r = splitrt(
        "profile", "--segments", str(root / "other"), "--runs", "1", "--warmup", "0", "--out", str(other_profile)
    )
    assert r.returncode == 0, r.stderr
    (root / "profiles").mkdir()
    for model in ("alexnet", "resnet18", "vgg16"):
        shutil.copy(other_profile, root / "profiles" / f"{model}.json")
    create_key_pair(root / "keys", "rsu")
    (root / "garbage.key_secret").write_text("not a key\n")
    (root / "bad_policy").mkdir()
    (root / "bad_policy" / "policy.json").write_text('{"format_version": 1, "method": "mad2rl"')
    return root


def splitrt(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "splitrt.tools.cli.main", *args], cwd=ROOT, capture_output=True, text=True, timeout=300
    )


# (id, argv with {w} for the workspace, text the one error line must contain)
CASES = [
    # export
    ("export-unknown-model", "export --model resnet19 --out {w}/x", "unknown model 'resnet19'"),
    ("export-missing-onnx", "export --onnx {w}/nope.onnx --out {w}/x", "does not exist"),
    ("export-garbage-onnx", "export --onnx {w}/chain/manifest.json --out {w}/x", "not a valid ONNX model"),
    ("export-missing-weights", "export --model resnet18 --weights {w}/nope.pth --out {w}/x", "weights file"),
    # profile: bad manifests and segments, bad flags, bad output
    ("profile-tampered-segment", "profile --segments {w}/tampered", "seg_001.onnx has sha256"),
    ("profile-no-manifest", "profile --segments {w}/nowhere", "no manifest at"),
    ("profile-missing-field", "profile --segments {w}/no_segments", "missing field(s) segments"),
    ("profile-wrong-version", "profile --segments {w}/version_2", "format_version 2 is not supported"),
    ("profile-malformed-cut", "profile --segments {w}/bad_cut", "malformed entry"),
    ("profile-not-json", "profile --segments {w}/not_json", "cannot read manifest"),
    ("profile-missing-segment", "profile --segments {w}/no_files", "seg_000.onnx is missing"),
    ("profile-runs-0", "profile --segments {w}/chain --runs 0", "--runs must be >= 1"),
    ("profile-out-unwritable", "profile --segments {w}/chain --runs 1 --out /proc/nope/p.json", "--out /proc/nope"),
    ("profile-out-is-dir", "profile --segments {w}/chain --runs 1 --out {w}/chain", "is a directory"),
    ("profile-provider", "profile --segments {w}/chain --provider tpu", "execution provider 'tpu'"),
    ("profile-speed-0", "profile --segments {w}/chain --speed-factor 0", "--speed-factor must be >= 1"),
    # serve
    ("serve-tampered-segment", "serve --segments {w}/tampered --bind tcp://127.0.0.1:*", "has sha256"),
    ("serve-bind-garbage", "serve --segments {w}/chain --bind not-a-url", "cannot bind not-a-url"),
    ("serve-bind-http", "serve --segments {w}/chain --bind http://127.0.0.1:80", "cannot bind http://"),
    ("serve-bind-no-port", "serve --segments {w}/chain --bind tcp://127.0.0.1", "cannot bind tcp://127.0.0.1"),
    ("serve-workers-0", "serve --segments {w}/chain --workers 0", "--workers must be >= 1"),
    ("serve-queue-limit-0", "serve --segments {w}/chain --queue-limit 0", "--queue-limit must be >= 1"),
    ("serve-max-message", "serve --segments {w}/chain --max-message-bytes 10", "--max-message-bytes must be"),
    ("serve-missing-key", "serve --segments {w}/chain --curve-secret {w}/nope --allow {w}/keys", "no such key file"),
    (
        "serve-garbage-key",
        "serve --segments {w}/chain --curve-secret {w}/garbage.key_secret --allow {w}/keys",
        "not a ZeroMQ certificate",
    ),
    (
        "serve-public-as-secret",
        "serve --segments {w}/chain --curve-secret {w}/keys/rsu.key --allow {w}/keys",
        "holds no secret key",
    ),
    ("serve-allow-without-key", "serve --segments {w}/chain --allow {w}/keys", "--allow needs --curve-secret"),
    (
        "serve-empty-allow",
        "serve --segments {w}/chain --curve-secret {w}/keys/rsu.key_secret --allow {w}/chain",
        "holds no public key files",
    ),
    # vehicle
    ("vehicle-tampered-segment", "vehicle --segments {w}/tampered --edge " + DEAD, "has sha256"),
    (
        "vehicle-edge-http",
        "vehicle --segments {w}/chain --edge http://x:1",
        "--edge 'http://x:1' is not a valid ZeroMQ endpoint",
    ),
    ("vehicle-edge-no-port", "vehicle --segments {w}/chain --edge tcp://127.0.0.1", "is not a valid ZeroMQ endpoint"),
    (
        "vehicle-timeout-0",
        "vehicle --segments {w}/chain --edge " + DEAD + " --timeout-s 0",
        "--timeout-s must be positive",
    ),
    (
        "vehicle-connect-negative",
        "vehicle --segments {w}/chain --edge " + DEAD + " --connect-s -1",
        "--connect-s must be >= 0",
    ),
    ("vehicle-decider", "vehicle --segments {w}/chain --edge " + DEAD + " --decider magic", "--decider 'magic'"),
    (
        "vehicle-out-unwritable",
        "vehicle --segments {w}/chain --edge " + DEAD + " --out /proc/nope/r.jsonl",
        "/proc/nope",
    ),
    ("vehicle-out-is-dir", "vehicle --segments {w}/chain --edge " + DEAD + " --out {w}/chain", "is a directory"),
    (
        "vehicle-journal-corrupt",
        "vehicle --segments {w}/chain --edge " + DEAD + " --journal {w}/chain/manifest.json",
        "line 1 is not JSON",
    ),
    (
        "vehicle-server-key-alone",
        "vehicle --segments {w}/chain --edge " + DEAD + " --server-key {w}/keys/rsu.key",
        "--server-key needs --curve-secret",
    ),
    (
        "vehicle-key-count",
        "vehicle --segments {w}/chain --edge "
        + DEAD
        + " --edge "
        + DEAD
        + " --edge "
        + DEAD
        + " --curve-secret {w}/keys/rsu.key_secret --server-key {w}/keys/rsu.key --server-key {w}/keys/rsu.key",
        "one per --edge",
    ),
    # bench
    ("bench-unknown", "bench --only nosuch --out {w}/b.json", "unknown benchmark(s) nosuch"),
    ("bench-out-unwritable", "bench --only simulator --quick --out /proc/nope/b.json", "--out /proc/nope"),
    # evaluate
    ("evaluate-method", "evaluate --methods nosuch --out {w}/e", "--methods: unknown nosuch"),
    ("evaluate-set-key", "evaluate --set bogus=1 --out {w}/e", "--set 'bogus' is not a scenario setting"),
    ("evaluate-set-value", "evaluate --set slot_s=-1 --out {w}/e", "slot_s = -1.0 must be > 0"),
    ("evaluate-method-opt", "evaluate --methods ga --method-opt ga.population=abc --out {w}/e", "is not a valid int"),
    (
        "evaluate-profile-other-manifest",
        "evaluate --vehicle-profiles {w}/profiles --rsu-profiles {w}/profiles --out {w}/e",
        "was measured for chain manifest",
    ),
    (
        "evaluate-policy-corrupt",
        "evaluate --methods mad2rl --method-opt mad2rl.policy={w}/bad_policy --cvs 1 --svs 1 --seeds 1 --no-plots --out {w}/e",
        "cannot read policy metadata",
    ),
    ("evaluate-out-unwritable", "evaluate --methods local --seeds 1 --out /proc/nope/e", "--out /proc/nope/e"),
    # train, export-policy
    ("train-method", "train --method nosuch --out {w}/t", "--method 'nosuch'"),
    ("train-resume-nothing", "train --resume --out {w}/t_empty", "--resume: no checkpoint"),
    ("train-device", "train --device tpu --out {w}/t", "--device 'tpu' is not a torch device"),
    ("train-validate-negative", "train --validate-every -1 --out {w}/t", "--validate-every must be >= 0"),
    ("train-out-unwritable", "train --episodes 1 --out /proc/nope/t", "--out /proc/nope/t"),
    ("export-policy-no-run", "export-policy --run {w}/nowhere", "no checkpoint in"),
    # keys
    ("keys-exist", "keys --out {w}/keys --name rsu", "exist already"),
    ("keys-bad-name", "keys --out {w}/keys --name ../x", "must be a plain file name"),
    ("keys-unwritable", "keys --out /proc/nope --name a", "cannot write keys into /proc/nope"),
]


@pytest.mark.parametrize(("argv", "needle"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_user_mistake_gives_one_line_error(w, argv, needle):
    r = splitrt(*[a.replace("{w}", str(w)) for a in argv.split()])
    assert "Traceback" not in r.stderr, r.stderr
    assert r.returncode == 1, (r.returncode, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("splitrt ") and ": error: " in lines[0], lines[0]
    assert needle.replace("{w}", str(w)) in lines[0], lines[0]


@pytest.mark.parametrize(
    "argv",
    [
        "vehicle --segments {w}/chain",
        "serve --segments {w}/chain --role cloud",
        "profile --segments {w}/chain --runs x",
    ],
    ids=["vehicle-no-edge", "serve-bad-role", "profile-runs-not-int"],
)
def test_argparse_mistakes_give_usage_and_exit_2(w, argv):
    r = splitrt(*argv.replace("{w}", str(w)).split())
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert r.stderr.strip().splitlines()[-1].startswith("splitrt ")


def test_policy_for_another_scenario_shape_is_reported_not_used(w, tmp_path):
    """A policy whose node count differs from the scenario's is skipped with the reason printed."""
    policy = tmp_path / "policy"
    policy.mkdir()
    meta = {"format_version": 1, "method": "mad2rl", "n_nodes": 7, "types": [], "scenario": {}}
    (policy / "policy.json").write_text(json.dumps(meta))
    r = splitrt(
        "evaluate", "--methods", "mad2rl", "--method-opt", f"mad2rl.policy={policy}", "--cvs", "1", "--svs", "1",
        "--seeds", "1", "--no-plots", "--out", str(tmp_path / "e"),
    )  # fmt: skip
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    assert "skipped mad2rl cvs=1 svs=1" in r.stdout and "no trained mad2rl policy" in r.stdout, r.stdout
