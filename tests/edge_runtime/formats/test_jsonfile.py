"""The one reader of the runtime's versioned JSON files: every way a file can be wrong is named."""

from __future__ import annotations

import json

import pytest

from splitrt.edge_runtime.decide.onnx_policy import OnDevicePolicy
from splitrt.edge_runtime.errors import ManifestError, SplitrtError
from splitrt.edge_runtime.formats.jsonfile import read_versioned


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, r"thing .*t\.json does not exist \(make one\)"),
        ("{not json", r"cannot read thing .*t\.json"),
        (b"\xff\xfe", r"cannot read thing .*t\.json"),
        ("[1, 2]", "format_version must be 2"),
        ('{"format_version": 1, "a": 1}', "format_version must be 2"),
        ('{"format_version": 2}', r"missing field\(s\) a, b"),
    ],
)
def test_every_bad_file_is_named_with_the_requested_error(tmp_path, content, message):
    path = tmp_path / "t.json"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content)
    with pytest.raises(ManifestError, match=message):
        read_versioned(path, "thing", 2, required=("a", "b"), error=ManifestError, if_missing=" (make one)")


def test_a_good_file_is_returned_as_is(tmp_path):
    path = tmp_path / "t.json"
    path.write_text(json.dumps({"format_version": 2, "a": [1], "b": None}))
    assert read_versioned(path, "thing", 2, required=("a", "b")) == {"format_version": 2, "a": [1], "b": None}


def test_policy_metadata_that_is_not_an_object_is_refused(tmp_path):
    (tmp_path / "policy.json").write_text("[]")  # used to fail with AttributeError on .get
    with pytest.raises(SplitrtError, match="policy metadata .*policy.json: format_version must be"):
        OnDevicePolicy(tmp_path)
