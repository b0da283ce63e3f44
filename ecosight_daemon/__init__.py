"""EcoSight daemon: watch labeled audio folders, cache YAMNet embeddings, retrain a classifier."""

__version__ = "0.1.0"
