"""Audio files into the cache: names and walks, reconcile, the per-file steps, the CLI's one-
shot run, the daemon's stream, Ray."""
