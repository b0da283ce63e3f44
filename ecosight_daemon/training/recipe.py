"""`TrainingRecipe`: the one list of settings that shape a fitted model. The job carries it,
the heads read their parts, and each version's metadata records it."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from ecosight_daemon.config import TrainingSettings


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
