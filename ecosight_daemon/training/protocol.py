"""What the daemon and its training process say to each other, as types.

Parent -> worker: `FitJob` (the arrays are in the job folder, everything else here),
then optionally a `DetectorJob` and `ExportRequest`s, then `Shutdown`. Worker -> parent:
`Fitted` (with the `TrainingResult`), then `DetectorTrained`, `Exported` or `ExportFailed`
per request. The messages travel
over a multiprocessing pipe between this program's own two processes.

The job carries its `TrainingRecipe` (recipe.py).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from ecosight_daemon.training.recipe import TrainingRecipe


@dataclass(frozen=True)
class IncumbentModel:
    """The current model as the gate judges it (its twin that never saw the test split)."""

    version: str
    model_path: str
    metadata: dict[str, Any]  # classes, pooling, priority_class, priority_threshold


@dataclass(frozen=True)
class FitJob:
    folder: str  # holds job_data.npz; the worker writes its models here
    classes: list[str]
    pooling: str
    recipe: TrainingRecipe
    incumbent: IncumbentModel | None
    export_handle: str  # the YAMNet handle the end-to-end SavedModel wraps
    onnx_body: str = ""  # the verified ONNX body, for the patches -> probabilities export ("": none)
    window_patches: int = 4  # [detection] window_patches, for the device files' note on sliding windows


@dataclass(frozen=True)
class ExportRequest:
    target: str  # folder for the end-to-end SavedModel
    version: str = ""  # the version it belongs to (written into the device files)


@dataclass(frozen=True)
class DetectorSample:
    """One snapshot sample as the event detector reads it back from the class folders."""

    path: str  # relative to audio_dir
    label: str
    group: str
    split: str  # 'train', 'val' or 'test'
    sha256: str  # the embedded content: a file changed since is left out


@dataclass(frozen=True)
class DetectorJob:
    """The retrain's event detector (training/detector_training.py), trained after the fit in
    the same process: its audio, soundscapes and ONNX session never enter the daemon's."""

    staging: str  # the version being made: event_detector.npz goes here
    samples: list[DetectorSample]
    classes: list[str]
    background: str
    priority: str
    false_alarms_per_hour: float
    audio_dir: str
    models_dir: str  # where the converted ONNX body of YAMNet is kept
    yamnet_handle: str
    yamnet_sha256: str
    embedding_model_id: str  # the snapshot's: the detector's YAMNet must be the same
    incumbent_dir: str = ""  # the current version's folder, for the gate's side-by-side ("": none)
    confusers_per_hour: float = 25.0  # [detection] confusers_per_hour
    shot_cnn_epochs: int = 8  # [detection] shot_cnn_epochs (0: no CNN candidate)
    context_trees: bool = True  # [detection] context_trees


@dataclass(frozen=True)
class DetectorTrained:
    figures: dict[str, Any]  # or {"skipped": reason}


@dataclass(frozen=True)
class Shutdown:
    pass


@dataclass(frozen=True)
class TrainingResult:
    ok: bool
    error: str = ""
    epochs_run: int = 0
    history: dict[str, list[float]] = field(default_factory=dict)
    priority_threshold: float | None = None
    threshold: dict[str, Any] = field(default_factory=dict)  # how it was chosen
    candidate_metrics: dict[str, Any] = field(default_factory=dict)
    incumbent_metrics: dict[str, Any] | None = None
    test_labels: list[int] = field(default_factory=list)
    candidate_predictions: list[int] = field(default_factory=list)
    incumbent_predictions: list[int] | None = None

    @classmethod
    def failed(cls, error: str) -> TrainingResult:
        return cls(ok=False, error=error)


@dataclass(frozen=True)
class Progress:
    """Sent while fitting: a stage, and for the keras head each epoch's losses."""

    stage: str
    epoch: int = 0
    loss: float | None = None
    val_loss: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class Fitted:
    result: TrainingResult


@dataclass(frozen=True)
class Exported:
    pass


@dataclass(frozen=True)
class ExportFailed:
    error: str


ToWorker = FitJob | DetectorJob | ExportRequest | Shutdown
FromWorker = Progress | Fitted | DetectorTrained | Exported | ExportFailed
