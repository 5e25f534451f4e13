"""The edge node (RSU or service vehicle): serving tail segments of offloaded tasks and scheduling them."""
