"""`splitrt bench`: the project's benchmarks."""
