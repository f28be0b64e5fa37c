"""policy_server: serves a work dir (see README.md and docs/ARCHITECTURE.md)."""
