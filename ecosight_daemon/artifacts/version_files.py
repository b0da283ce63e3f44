"""The names of the files in a version folder (models_dir/versions/vNNNN/): one list for the
training process that writes them, the retrain that completes them, the registry that
publishes them and the HTTP server that shows them."""

from __future__ import annotations

MODEL = "model.keras"
EVENT_DETECTOR = "event_detector.npz"  # the per-patch detector for long recordings (training/event_detector.py)
CLASSIFIER_ARRAYS = "classifier.npz"  # a logistic head's arrays: the same model without TensorFlow
METADATA = "metadata.json"  # written last: a version folder with metadata is complete
CLASS_NAMES = "class_names.json"
METRICS = "performance_metrics.json"
HISTORY_JSON = "training_history.json"
HISTORY_PICKLE = "training_history.pkl"
MANIFEST = "manifest.csv"  # every sample with its sha256, class, group and split
HOLDOUT_MODEL = "holdout_model.keras"  # the twin that never saw the test split; the next gate uses it
JOB_DATA = "job_data.npz"  # the arrays the parent hands the training process
REPORT_HTML = "report.html"
CONFUSION_PNG = "confusion_matrix.png"
CURVES_PNG = "training_curves.png"
EXPORT_DIR = "export"  # the end-to-end SavedModel and the ONNX model for devices
EXPORT_PARTIAL = "export.partial"

PAGES = (REPORT_HTML, CONFUSION_PNG, CURVES_PNG)  # what a browser may fetch of a version
