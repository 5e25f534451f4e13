"""Decision methods in the simulator: the interface, the registry, baselines, references and trained policies."""
