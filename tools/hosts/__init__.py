"""Multi-host runs over SSH: inventory, host checks, shipping, clocks, remote processes (docs/deploy.md)."""
