"""The published models: the registry of versions, one retrain end to end, rollback, predict,
drift."""
