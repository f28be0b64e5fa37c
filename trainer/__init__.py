"""trainer (see README and shared DESIGN)."""
