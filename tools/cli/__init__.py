"""`splitrt <verb>`: the command-line entry point and one module per verb."""
