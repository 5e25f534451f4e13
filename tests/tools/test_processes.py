"""Harness children: readiness read from the status file, absolute paths from any directory, and
no child outliving its harness (killed, or stopped with SIGTERM)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import psutil
import pytest

from splitrt.edge_runtime.errors import SplitrtError
from splitrt.models.segmenter import segment_model
from splitrt.tools.processes import Child, cli_command
from tests.onnx_graphs import chain_model


def test_a_node_started_from_another_directory_reports_ready_with_its_endpoint(tmp_path, monkeypatch):
    segment_model(chain_model(), tmp_path / "exports" / "chain", name="chain", source={})
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # neither the repo nor the exports' parent
    child = Child(
        "rsu",
        cli_command("serve", "--segments", str(tmp_path / "exports" / "chain"), "--bind", "tcp://127.0.0.1:*"),
        tmp_path / "logs",
        status=True,
    )
    try:
        ready = child.wait_ready(120)
        assert ready["event"] == "ready" and ready["pid"] == child.pid
        assert ready["endpoint"].startswith("tcp://127.0.0.1:") and not ready["endpoint"].endswith(":*")
    finally:
        assert child.terminate(grace_s=30) == 0


def test_a_start_up_error_arrives_as_the_reported_message(tmp_path):
    child = Child("rsu", cli_command("serve", "--segments", str(tmp_path / "missing")), tmp_path, status=True)
    with pytest.raises(SplitrtError, match=r"rsu failed to start: .*missing"):
        child.wait_ready(120)
    assert child.wait(60) == 1


def test_a_child_that_exits_without_a_word_is_named(tmp_path):
    child = Child("quiet", [sys.executable, "-c", "raise SystemExit(3)"], tmp_path, status=False)
    child.status = tmp_path / "quiet.status"  # the harness expects a status it never gets
    with pytest.raises(SplitrtError, match="quiet exited with 3 before it was ready"):
        child.wait_ready(60)


HARNESS = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from splitrt.tools.processes import Child, exit_on_sigterm
    exit_on_sigterm()
    child = Child("sleeper", [sys.executable, "-c", "import time; time.sleep(300)"], Path(sys.argv[1]))
    try:  # the pid is printed inside the try: a signal right after it still runs the finally
        print(child.pid, flush=True)
        time.sleep(300)
    finally:
        child.terminate(grace_s=10)
        print("stopped", flush=True)
    """
)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_no_child_outlives_its_harness(tmp_path, sig):
    harness = subprocess.Popen([sys.executable, "-c", HARNESS, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    child_pid = int(harness.stdout.readline())
    assert psutil.pid_exists(child_pid)
    os.kill(harness.pid, sig)
    harness.wait(60)
    if sig == signal.SIGTERM:  # the harness's finally ran: it stopped the child itself
        assert harness.stdout.read().strip() == "stopped" and harness.returncode == 128 + signal.SIGTERM
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            if psutil.Process(child_pid).status() == psutil.STATUS_ZOMBIE:
                break
        except psutil.NoSuchProcess:
            break
        time.sleep(0.05)
    else:
        pytest.fail(f"child {child_pid} still running after its harness got signal {sig}")
