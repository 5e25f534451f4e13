"""The client vehicle: task generation, decisions, the head segments, offloading, and the task journal."""
