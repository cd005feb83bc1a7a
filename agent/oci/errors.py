"""The errors the pure modules raise: the agent's one error tree (`agent/errors.py`, itself pure).

Re-exported here so the controller catches what `agent.oci.*` raises without importing agent internals.
"""

from agent.errors import AgentError, FailedPrecondition, Integrity, InvalidArgument

__all__ = ["AgentError", "FailedPrecondition", "Integrity", "InvalidArgument"]
