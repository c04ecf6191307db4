"""Runner-facing parts: launch checks and hooks."""
