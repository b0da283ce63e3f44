"""What the daemon and its training process say to each other, as types.

Parent -> worker: `FitJob` (the arrays are in the job folder, everything else here),
then optionally `ExportRequest`s, then `Shutdown`. Worker -> parent: `Fitted` (with the
`TrainingResult`), then `Exported` or `ExportFailed` per request. The messages travel
over a multiprocessing pipe between this program's own two processes.

`TrainingRecipe` is the one list of settings that shape a fitted model: the job
carries it, the Keras head reads its part, and each version's metadata records it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from ecosight_daemon.config import TrainingSettings


class RetrainStatus(str, Enum):
    PROMOTED = "promoted"
    REJECTED = "rejected"
    FAILED = "failed"
    ROLLED_BACK = "rolled back"  # an operator's rollback, in the log beside the runs


@dataclass(frozen=True)
class ClassifierParams:
    """The gradient-trained (keras) head's hyperparameters."""

    hidden_units: tuple[int, ...]
    dropout: float
    batch_norm: bool
    learning_rate: float
    l2: float
    epochs: int
    batch_size: int
    patience: int
    seed: int


@dataclass(frozen=True)
class TrainingRecipe:
    head: str
    logistic_c: float
    classifier: ClassifierParams
    split: tuple[float, float, float]
    priority_class: str
    priority_recall_target: float
    priority_min_precision: float

    @classmethod
    def from_settings(cls, t: TrainingSettings) -> TrainingRecipe:
        return cls(
            head=t.head,
            logistic_c=t.logistic_c,
            classifier=ClassifierParams(tuple(t.hidden_units), t.dropout, t.batch_norm, t.learning_rate, t.l2,
                                        t.epochs, t.batch_size, t.patience, t.seed),
            split=(t.split[0], t.split[1], t.split[2]),
            priority_class=t.priority_class,
            priority_recall_target=t.priority_recall_target,
            priority_min_precision=t.priority_min_precision,
        )

    def as_dict(self) -> dict[str, Any]:
        """Flat, JSON-ready: the `training_settings` of a version's metadata."""
        flat = {key: value for key, value in dataclasses.asdict(self).items() if key != "classifier"}
        flat.update(dataclasses.asdict(self.classifier))
        return {key: list(value) if isinstance(value, tuple) else value for key, value in flat.items()}


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


@dataclass(frozen=True)
class ExportRequest:
    target: str  # folder for the end-to-end SavedModel


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


ToWorker = FitJob | ExportRequest | Shutdown
FromWorker = Progress | Fitted | Exported | ExportFailed
