"""Small helpers every room may use: durable file writes, digests, locks, progress, pause
points."""
