"""The site learning a device port needs beside the version's `event_detector.onnx`: per
recorder, the offset subtracted from each class's margin before the label rule, as the
daemon scores that recorder's next recording (`ecosight-daemon sites --json`)."""

from __future__ import annotations

from typing import Any

from ecosight_daemon.artifacts import version_files as files
from ecosight_daemon.artifacts.event_detector import EventDetector
from ecosight_daemon.config import Settings
from ecosight_daemon.detection.site_learning import site_offsets
from ecosight_daemon.errors import EcosightError
from ecosight_daemon.store.database import Database
from ecosight_daemon.versions.registry import ModelRegistry

LABEL_RULE = ("margins = event_detector.onnx's margins minus this recorder's margin_offsets (per class); then the "
              "detector's own label rule: the priority class where its margin >= its threshold, else the class "
              "whose margin most exceeds its class threshold where one does (the priority class only at its "
              "threshold), else the background class")


def site_offsets_for_devices(settings: Settings, store: Database) -> dict[str, Any]:
    registry = ModelRegistry(settings.paths.models_dir)
    version = registry.current_version()
    if version is None:
        raise EcosightError("no model yet: sites are learned under a version's event detector (run a retrain first)")
    detector_file = registry.version_dir(version) / files.EVENT_DETECTOR
    if not detector_file.is_file():
        raise EcosightError(f"version {version} has no event detector (its recordings are scored by the clip model "
                            "over windows, which learns no sites); retrain with [detection] train_detector = true")
    detector = EventDetector.load(detector_file)
    detection = settings.detection
    return {
        "model_version": version, "classes": detector.classes, "site_learning": detection.site_learning,
        "min_hours": detection.site_learning_min_hours, "budget_false_alarms_per_hour": detection.false_alarms_per_hour,
        "note": "offsets apply once a recorder has min_hours analysed: a threshold is raised where the site's "
                "background alarms more than the budget; the priority class's also lowered (a negative offset) "
                "once the site has hours enough to count its alarms at the budget"
                if detection.site_learning else "site learning is off ([detection] site_learning): the daemon applies "
                                                "no offsets",
        "label_rule": LABEL_RULE,
        "sites": site_offsets(store.sites, version, detector.classes, detector.base_thresholds(),
                              detection.site_learning_min_hours, detection.false_alarms_per_hour,
                              detector.calibrated_class),
    }
