"""Rollouts: a release file (spec), the waves that switch hosts to it (plan), the record that lets a killed
controller resume (journal), and the engine that drives hosts through the agent's Releases service."""
