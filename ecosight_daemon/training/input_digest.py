"""One digest of everything a retrain's model depends on: the samples (content, label,
group, split), the classes, the pooling, the embedding model, the training recipe and the
gate. Training is deterministic, so two attempts with the same digest give the same model;
judged against the same current model, the same decision too, and the second is not run
(5,000 `POST /retrain` on unchanged data had minted 3 identical versions of tens of MB each).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from typing import Any

from ecosight_daemon.training.dataset import Snapshot
from ecosight_daemon.training.gate import GatePolicy
from ecosight_daemon.training.recipe import TrainingRecipe


def training_input_digest(snapshot: Snapshot, recipe: TrainingRecipe, policy: GatePolicy) -> str:
    described: dict[str, Any] = {
        "samples": sorted((s.sha256, s.label, s.group, s.split.value) for s in snapshot.samples),
        "classes": snapshot.classes,
        "pooling": snapshot.pooling,
        "embedding_model_id": snapshot.embedding_model_id,
        "recipe": recipe.as_dict(),
        "gate": asdict(policy),
    }
    return hashlib.sha256(json.dumps(described, sort_keys=True).encode()).hexdigest()
