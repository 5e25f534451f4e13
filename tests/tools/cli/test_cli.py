"""CLI smoke tests in a subprocess: export, profile, bench, and one-line errors for user mistakes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import onnx

from tests.onnx_graphs import residual_model, two_input_model

ROOT = Path(__file__).resolve().parents[3]


def splitrt(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "splitrt.tools.cli.main", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def assert_one_line_error(result: subprocess.CompletedProcess, *needles: str) -> None:
    assert result.returncode == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr  # no traceback for a user mistake
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_export_and_profile_torchvision(tmp_path):
    r = splitrt("export", "--model", "resnet18", "--out", str(tmp_path))
    assert r.returncode == 0, r.stderr
    assert "resnet18: 12 segments, 13 cuts" in r.stdout
    manifest = json.loads((tmp_path / "resnet18" / "manifest.json").read_text())
    assert len(manifest["segments"]) == 12
    r = splitrt(
        "profile",
        "--segments",
        str(tmp_path / "resnet18"),
        "--runs",
        "2",
        "--warmup",
        "0",
        "--out",
        str(tmp_path / "p.json"),
    )
    assert r.returncode == 0, r.stderr
    prof = json.loads((tmp_path / "p.json").read_text())
    assert prof["model"] == "resnet18" and len(prof["cuts"]) == 13
    assert prof["whole"]["median_s"] > 0 and prof["effective_flops_per_s"] > 0
    assert "layer4.1/conv1" in r.stdout  # the per-cut table names the segments


def test_export_user_onnx(tmp_path):
    path = tmp_path / "res.onnx"
    onnx.save(residual_model(), path)
    r = splitrt("export", "--onnx", str(path), "--out", str(tmp_path / "out"), "--granularity", "op")
    assert r.returncode == 0, r.stderr
    manifest = json.loads((tmp_path / "out" / "res" / "manifest.json").read_text())
    assert manifest["source"]["kind"] == "onnx" and len(manifest["segments"]) == 6


def test_bad_input_gives_one_line_errors(tmp_path):
    assert_one_line_error(splitrt("export", "--model", "resnet19", "--out", str(tmp_path)), "unknown model 'resnet19'")
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\x00not an onnx model at all")
    assert_one_line_error(splitrt("export", "--onnx", str(garbage), "--out", str(tmp_path)), "not a valid ONNX model")
    assert_one_line_error(
        splitrt("export", "--onnx", str(tmp_path / "missing.onnx"), "--out", str(tmp_path)), "does not exist"
    )
    two = tmp_path / "two.onnx"
    onnx.save(two_input_model(), two)
    assert_one_line_error(splitrt("export", "--onnx", str(two), "--out", str(tmp_path)), "2 inputs (a, b)")
    assert_one_line_error(splitrt("profile", "--segments", str(tmp_path / "nowhere")), "no manifest at")
    assert_one_line_error(
        splitrt("export", "--model", "resnet18,alexnet", "--weights", str(two), "--out", str(tmp_path)),
        "--weights applies to one model",
    )
    r = splitrt("export", "--model", "resnet18", "--out", str(tmp_path), "--input-shape", "1,3,x")
    assert r.returncode == 2 and "--input-shape" in r.stderr  # argparse's own usage error


def test_bench_writes_records(tmp_path):
    out = tmp_path / "results.json"
    r = splitrt(
        "bench",
        "--only",
        "split_overhead",
        "--quick",
        "--models",
        "resnet18",
        "--work",
        str(tmp_path / "work"),
        "--out",
        str(out),
    )
    assert r.returncode == 0, r.stderr
    records = json.loads(out.read_text())
    figures = {(x["benchmark"], x["figure"]) for x in records}
    assert ("split_overhead", "chain_over_whole") in figures and ("split_overhead", "sum_over_whole") in figures
    for x in records:
        assert set(x) == {"benchmark", "figure", "value", "unit", "params"}
        assert x["params"]["model"] == "resnet18"
    assert "chain_over_whole" in r.stdout
    assert_one_line_error(splitrt("bench", "--only", "nosuch", "--out", str(out)), "unknown benchmark(s) nosuch")


def test_serve_and_vehicle_user_errors_are_one_line(tmp_path):
    from splitrt.models.segmenter import segment_model
    from tests.onnx_graphs import chain_model

    chain = tmp_path / "chain"
    segment_model(chain_model(), chain, name="chain", source={}, granularity="op")
    dead = "tcp://127.0.0.1:9"
    assert_one_line_error(splitrt("vehicle", "--segments", str(tmp_path / "nowhere"), "--edge", dead), "no manifest at")
    assert_one_line_error(
        splitrt("vehicle", "--segments", str(chain), "--edge", dead, "--decider", "fixed:99"),
        "--decider 'fixed:99': cut must be 0..",
    )
    assert_one_line_error(
        splitrt("vehicle", "--segments", str(chain), "--edge", dead, "--arrivals", "poisson:-1"),
        "--arrivals must be per-slot or poisson:RATE",
    )
    assert_one_line_error(
        splitrt("vehicle", "--segments", str(chain), "--edge", "not-an-endpoint", "--slots", "1"),
        "--edge 'not-an-endpoint' is not a valid ZeroMQ endpoint",
    )
    assert_one_line_error(
        splitrt("serve", "--segments", str(chain), "--bind", "tcp://256.0.0.1:1"), "cannot bind tcp://256.0.0.1:1"
    )
    assert_one_line_error(splitrt("serve", "--segments", str(chain), str(chain)), "model 'chain' is given twice")
    r = splitrt("serve", "--segments", str(chain), "--role", "cloud")
    assert r.returncode == 2 and "--role" in r.stderr


def test_runtime_benchmarks_write_records(tmp_path, exports):
    work = tmp_path / "work"
    (work / "exports").mkdir(parents=True)
    (work / "exports" / "resnet18").symlink_to(exports.get("resnet18").directory)
    out = tmp_path / "results.json"
    r = splitrt("bench", "--only", "link,encoding", "--quick", "--work", str(work), "--out", str(out))
    assert r.returncode == 0, r.stderr
    records = json.loads(out.read_text())
    ratios = {x["params"]["bytes"]: x["value"] for x in records if x["figure"] == "goodput_over_raw"}
    assert sorted(ratios) == [4096, 102400, 819200, 3145728] and all(v > 0 for v in ratios.values())
    ceiling = {x["params"]["bytes"]: x["value"] for x in records if x["figure"] == "bare_over_raw"}
    assert sorted(ceiling) == sorted(ratios) and all(v > 0 for v in ceiling.values())
    saved = {(x["params"]["cut"], x["params"]["encoding"]): x["value"] for x in records if x["figure"] == "bytes_saved"}
    assert len(saved) == 6 and {v for (_, e), v in saved.items() if e == "fp16"} == {0.5}
    assert {v for (_, e), v in saved.items() if e == "int8"} == {0.75}
    agreement = [x["value"] for x in records if x["figure"] == "top1_agreement"]
    assert all(0.0 <= v <= 1.0 for v in agreement)


def test_profile_records_the_speed_emulation(tmp_path):
    from splitrt.edge_runtime.compute.speed import cgroup_root
    from splitrt.models.segmenter import segment_model
    from tests.onnx_graphs import chain_model

    chain = tmp_path / "chain"
    segment_model(chain_model(), chain, name="chain", source={}, granularity="op")
    out = tmp_path / "p.json"
    r = splitrt("profile", "--segments", str(chain), "--runs", "3", "--speed-factor", "2", "--out", str(out))
    assert r.returncode == 0, r.stderr
    device = json.loads(out.read_text())["device"]
    expected = "cgroup" if cgroup_root() is not None else "stretch"  # --speed-mode auto
    assert (device["speed_factor"], device["speed_mode"]) == (2.0, expected)
    assert f"speed factor 2 ({expected})" in r.stdout


def test_hil_user_errors_are_one_line(tmp_path):
    out = str(tmp_path / "o")
    assert_one_line_error(splitrt("hil", "--methods", "nosuch", "--out", out), "unknown method 'nosuch'")
    assert_one_line_error(splitrt("hil", "--methods", "ga", "--out", out), "none of --methods can run live: ga:")
    assert_one_line_error(splitrt("hil", "--preset", "table9", "--out", out), "unknown scenario preset 'table9'")
    assert_one_line_error(splitrt("hil", "--fault", "boom@1", "--out", out), "--fault 'boom@1'")
    assert_one_line_error(splitrt("record", "--broker", "nope://x", "--experiment", "e", "--out", out), "--broker")
