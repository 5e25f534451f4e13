"""Running segments with ONNX Runtime, device speed emulation, and per-segment latency profiles."""
