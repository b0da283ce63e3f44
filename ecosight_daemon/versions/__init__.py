"""The model versions in models_dir: the registry, one retrain end to end (it drives the
training process), rollback, retention, predict, drift."""
