"""Releases: what a host should run, kept by the agent as state (revisions, active / previous / last known
good), switched, verified and, when verification fails, reverted by the agent itself. See manager.py."""
