"""Fault tests: real processes killed, restarted and cut off; every wait bounded; loopback only."""
