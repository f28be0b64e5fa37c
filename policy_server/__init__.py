"""policy_server (see README and shared DESIGN)."""
