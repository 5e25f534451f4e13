"""Eq (6) FLOPs against hand computation."""

from __future__ import annotations

from splitrt.models.segmenter import segment_model
from tests.onnx_graphs import chain_model


def test_segment_flops_match_eq6_by_hand(tmp_path):
    manifest, _ = segment_model(chain_model(), tmp_path, name="chain", source={"kind": "test"})
    # conv1: out 4x8x8, C_in 3, 3x3 kernel, bias -> 2*H*W*(C_in*k^2+1)*C_out
    conv = 2 * 8 * 8 * (3 * 9 + 1) * 4
    relu = 4 * 8 * 8
    pool = 4 * 4 * 4 * (2 * 2)  # one op per window cell per output element
    gemm = (2 * 64 - 1) * 10  # (2 U_in - 1) U_out
    assert [s.flops for s in manifest.segments] == [conv + relu, pool, gemm]
    assert [c.flops_before for c in manifest.cuts] == [0, conv + relu, conv + relu + pool, conv + relu + pool + gemm]
    assert [c.flops_after for c in manifest.cuts] == [manifest.total_flops - c.flops_before for c in manifest.cuts]
    # eq (3): bytes of the tensor entering the next segment, float32; nothing sent when fully local
    assert [c.bytes for c in manifest.cuts] == [3 * 8 * 8 * 4, 4 * 8 * 8 * 4, 64 * 4, 0]
    assert manifest.source["uncounted_ops"] == []
