"""Containers: lifecycle, exec, logs, volumes, restart policies and health checks (the run component)."""
