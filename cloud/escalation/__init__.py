"""Escalation: who is told about an alert, in what order, until somebody acknowledges it."""
