"""`splitrt hil`: run a scenario live on real processes and compare it with the simulator."""
