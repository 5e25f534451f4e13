"""The runtime's files: segment manifests, work tables, link traces, task records and the small versioned JSON files."""
