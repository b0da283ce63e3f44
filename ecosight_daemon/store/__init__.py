"""The daemon's SQLite database: clip embeddings (rebuildable), long recordings' chunks
(rebuildable) and their detections, the review queue and reviewers' decisions (people's
work: not rebuildable), decode attempts; its schema and migrations; read-only reports."""
