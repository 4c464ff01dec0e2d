"""The cluster simulation's parts: fleet profiles, workload, node model, policies, report."""
