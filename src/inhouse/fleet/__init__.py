"""The fleet: remote nodes, their health and load, the complexity router, the scheduler."""
