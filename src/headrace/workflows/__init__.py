"""Workflows: Amazon States Language state machines, run durably."""
