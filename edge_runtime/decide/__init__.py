"""Per-task decisions on a vehicle: the decider interface, the built-in rules and the on-device ONNX policy."""
