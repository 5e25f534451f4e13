"""Training MAD2RL / P-QMIX: networks, the training loop, its configuration, and export to the on-device ONNX policy."""
