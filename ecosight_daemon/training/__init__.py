"""Training a classifier: snapshot and splits, heads, the training process (both sides),
evaluation and gate, report, exports."""
