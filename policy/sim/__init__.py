"""The simulator of the paper's system model: scenarios, workloads, mobility, one slot, the batched environment."""
