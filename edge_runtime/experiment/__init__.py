"""The experiment plane: MQTT telemetry, the shared slot clock, recording, and the Lyapunov controller on measured data."""
