"""The paper's system model as numpy-only math (channel, RSU allocation, Lyapunov terms, observation layout), shared by the simulator, the controller and the nodes."""
