"""sim_client (see README and shared DESIGN)."""
