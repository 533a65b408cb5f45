"""Loopback fakes of external services, speaking their documented APIs."""
