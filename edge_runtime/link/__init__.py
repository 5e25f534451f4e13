"""The tensor link: the ZeroMQ wire format and its CURVE security."""
