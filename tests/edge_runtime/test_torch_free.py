"""The deployable runtime never imports torch (DEVELOPERS.md), proven in a fresh interpreter."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from splitrt.models.segmenter import segment_model
from tests.onnx_graphs import chain_model

ROOT = Path(__file__).resolve().parents[2]


def test_runtime_and_device_verbs_do_not_import_torch(tmp_path):
    segment_model(chain_model(), tmp_path / "chain", name="chain", source={})
    code = textwrap.dedent(
        f"""
        import importlib, pkgutil, sys
        import splitrt.edge_runtime as edge_runtime
        for mod in pkgutil.walk_packages(edge_runtime.__path__, "splitrt.edge_runtime."):
            importlib.import_module(mod.name)
        from splitrt.edge_runtime.compute.segments import SegmentRunner
        from splitrt.models.segmenter import sample_input
        r = SegmentRunner({str(tmp_path / "chain")!r})
        y = r.run(sample_input(r.manifest.input), 0)
        assert y.shape == (1, 10)
        from splitrt.tools.cli.main import main
        assert main(["profile", "--segments", {str(tmp_path / "chain")!r}, "--runs", "2", "--warmup", "0"]) == 0
        bad = sorted(m for m in sys.modules if m == "torch" or m.startswith(("torch.", "torchvision")))
        print("TORCH_MODULES", bad)
        assert not bad, bad
        """
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr + result.stdout
    assert "TORCH_MODULES []" in result.stdout
