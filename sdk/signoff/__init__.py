"""signoff: an action-level human approval gate for AI agents, built on Temporal."""
