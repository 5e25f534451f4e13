"""`make arm-check`: the device side in an emulated arm64 Raspberry Pi."""
