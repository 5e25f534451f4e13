"""The manifest format: round trip, validation errors, sha256 refusal."""

from __future__ import annotations

import json
import shutil

import pytest

from splitrt.edge_runtime.compute.segments import SegmentRunner
from splitrt.edge_runtime.errors import ManifestError
from splitrt.edge_runtime.formats.manifest import Manifest
from splitrt.models.segmenter import segment_model
from tests.onnx_graphs import chain_model


@pytest.fixture
def chain_dir(tmp_path):
    segment_model(chain_model(), tmp_path / "chain", name="chain", source={"kind": "test"})
    return tmp_path / "chain"


def test_round_trip(chain_dir):
    m = Manifest.load(chain_dir)
    again = Manifest.from_dict(json.loads(json.dumps(m.to_dict())), chain_dir)
    assert again == m and again.digest == m.digest
    assert m.n_cuts == m.n_segments + 1
    assert m.cut_bytes()[-1] == 0


def _edit(chain_dir, fn):
    path = chain_dir / "manifest.json"
    data = json.loads(path.read_text())
    fn(data)
    path.write_text(json.dumps(data))


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d.update(format_version=99), "format_version 99 is not supported"),
        (lambda d: d.pop("cuts"), "missing field"),
        (lambda d: d["cuts"].pop(), "cuts for"),
        (lambda d: d["segments"][1].update(input="nope"), "segment 1 maps 'nope'"),
        (lambda d: d["cuts"][1].update(shape=[1, -4]), "must be positive"),
        (lambda d: d["cuts"][1].update(dtype="complex64"), "unsupported dtype"),
        (lambda d: d["segments"][0].update(file="../evil.onnx"), "plain file name"),
        (lambda d: d["cuts"][0].pop("bytes"), "malformed entry"),
    ],
)
def test_bad_manifests_are_refused_with_a_named_field(chain_dir, edit, message):
    _edit(chain_dir, edit)
    with pytest.raises(ManifestError, match=message):
        Manifest.load(chain_dir)


def test_not_json_and_missing(chain_dir, tmp_path):
    (chain_dir / "manifest.json").write_text("{not json")
    with pytest.raises(ManifestError, match="cannot read manifest"):
        Manifest.load(chain_dir)
    with pytest.raises(ManifestError, match="no manifest at"):
        Manifest.load(tmp_path / "empty")


def test_tampered_segment_is_refused(chain_dir):
    seg = chain_dir / "seg_001.onnx"
    data = bytearray(seg.read_bytes())
    data[-1] ^= 0xFF
    seg.write_bytes(bytes(data))
    with pytest.raises(ManifestError, match="segment 1 of chain.*sha256"):
        SegmentRunner(chain_dir)


def test_missing_segment_is_refused(chain_dir, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(chain_dir, copy)
    (copy / "seg_002.onnx").unlink()
    with pytest.raises(ManifestError, match="segment 2 of chain: file .* is missing"):
        SegmentRunner(copy)
    # Loading only the segments a node needs does not touch the missing one.
    assert SegmentRunner(copy, segments=[0, 1]).sessions.keys() == {0, 1}
