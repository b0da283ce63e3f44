"""Project defaults beside the old system's recipe, on the same grouped test folds.

Project: whole clip, soundfile + soxr, the configured pooling, normalization inside the
model (fitted on training data only), the configured head, a grouped validation split,
the gun-shot threshold. Old recipe: first 4 s, librosa, mean pooling, one global
mean/std over all data, the 512-256-128-64 MLP with batch norm and dropout, a random
(non-grouped) validation split, argmax.

Both are scored on the same folds of a grouped, stratified 5-fold split (the MANIFEST's
source-recording groups), so no recording is on both sides. The old recipe is also
scored the way it scored itself (random file-level split) to show how much the leak
inflated its number. Field gun shots (Gabon, Belize PAM) get their own recall.
"""

from __future__ import annotations

import csv
import logging
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import Figure, copy_corpus, dev_corpus, format_table, save_report, yamnet_handle
from ecosight_daemon.config import Settings
from ecosight_daemon.embedder import YamnetEmbedder
from ecosight_daemon.evaluation import apply_priority_threshold, choose_priority_threshold, classification_metrics
from ecosight_daemon.features import pool_patches
from ecosight_daemon.ingest import IngestLimits, embed_pending, reconcile
from ecosight_daemon.store import EmbeddingStore

logger = logging.getLogger(__name__)
FIELD_SOURCES = ("blegottesman/Gabon-Gunshot-Phase1-Code", "lydiakatsis/tropical_forest_gunshot_classifier")
FOLDS = 5


def project_features(embedder: YamnetEmbedder, rows: list[dict[str, str]], corpus: Path, pooling: str) -> np.ndarray:
    with tempfile.TemporaryDirectory(prefix="ecosight-acc-") as tmp:
        audio = copy_corpus(corpus, Path(tmp) / "audio")
        store = EmbeddingStore.open(Path(tmp) / "cache.sqlite3")
        store.adopt_model(embedder.model_id, embedder.fingerprint)
        limits = IngestLimits((".wav",), 600, 10**9)
        reconcile(store, audio, limits)
        embed_pending(store, embedder, audio, limits)
        features = np.stack([pool_patches(store.embeddings_for(r["sha256"]), pooling) for r in rows])
        store.close()
    return features


def old_recipe_features(embedder: YamnetEmbedder, rows: list[dict[str, str]], corpus: Path) -> np.ndarray:
    import librosa

    vectors = []
    for row in rows:
        waveform, _ = librosa.load(corpus / row["file"], sr=16_000, mono=True, duration=4.0)
        vectors.append(embedder.embed(waveform.astype(np.float32)).mean(axis=0))
    return np.stack(vectors)


def old_recipe_fit_predict(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, n_classes: int,
                           all_x: np.ndarray, seed: int) -> np.ndarray:
    """The predecessor's model: global mean/std over all data, 512-256-128-64 MLP, random val."""
    import keras

    keras.utils.set_random_seed(seed)
    mean, std = all_x.mean(axis=0), all_x.std(axis=0) + 1e-8
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(train_x))
    cut = int(len(order) * 0.85)
    fit_idx, val_idx = order[:cut], order[cut:]
    inputs = keras.Input((train_x.shape[1],))
    x = inputs
    for units in (512, 256, 128, 64):
        x = keras.layers.Dense(units)(x)
        x = keras.layers.BatchNormalization()(x)
        x = keras.layers.Activation("relu")(x)
        x = keras.layers.Dropout(0.3)(x)
    model = keras.Model(inputs, keras.layers.Dense(n_classes, activation="softmax")(x))
    model.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy")
    model.fit((train_x[fit_idx] - mean) / std, train_y[fit_idx],
              validation_data=((train_x[val_idx] - mean) / std, train_y[val_idx]),
              epochs=100, batch_size=64, verbose=0,
              callbacks=[keras.callbacks.EarlyStopping(patience=10, restore_best_weights=True),
                         keras.callbacks.ReduceLROnPlateau(patience=5, factor=0.5)])
    return np.asarray(model((test_x - mean) / std, training=False)).argmax(axis=1)


def project_fit_predict(settings: Settings, train_x: np.ndarray, train_y: np.ndarray, train_groups: np.ndarray,
                        test_x: np.ndarray, classes: list[str]) -> np.ndarray:
    from sklearn.model_selection import StratifiedGroupKFold

    from ecosight_daemon.training import ClassifierParams, fit_classifier, predict_probabilities

    t = settings.training
    inner = StratifiedGroupKFold(n_splits=6, shuffle=True, random_state=t.seed)
    fit_idx, val_idx = next(inner.split(train_x, train_y, train_groups))
    params = ClassifierParams(t.hidden_units, t.dropout, t.batch_norm, t.learning_rate, t.l2, t.epochs,
                              t.batch_size, t.patience, t.seed)
    fit = fit_classifier(train_x[fit_idx], train_y[fit_idx], train_x[val_idx], train_y[val_idx],
                         len(classes), params)
    priority = classes.index(t.priority_class)
    choice = choose_priority_threshold(predict_probabilities(fit.model, train_x[val_idx]), train_y[val_idx],
                                       priority, t.priority_recall_target, t.priority_min_precision)
    return apply_priority_threshold(predict_probabilities(fit.model, test_x), priority, choice.threshold)


def summarize(name: str, truth: np.ndarray, predicted: np.ndarray, field: np.ndarray, classes: list[str],
              gun: int) -> dict[str, Any]:
    metrics = classification_metrics(truth, predicted, classes)
    field_shots = field & (truth == gun)
    return {
        "recipe": name,
        "macro_f1": metrics["macro_f1"],
        "accuracy": metrics["accuracy"],
        "gun_shot_recall": metrics["per_class_metrics"]["gun_shot"]["recall"],
        "field_gun_shot_recall": float(np.mean(predicted[field_shots] == gun)) if field_shots.any() else None,
        "field_gun_shots": int(field_shots.sum()),
    }


def run() -> list[Figure]:
    from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

    corpus = dev_corpus()
    with (corpus / "MANIFEST.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    settings = Settings()
    embedder = YamnetEmbedder.load(yamnet_handle())
    classes = sorted({r["class"] for r in rows})
    gun = classes.index("gun_shot")
    y = np.array([classes.index(r["class"]) for r in rows])
    groups = np.array([r["group"] for r in rows])
    field = np.array([r["source_repo"] in FIELD_SOURCES for r in rows])
    ours = project_features(embedder, rows, corpus, settings.training.pooling)
    old = old_recipe_features(embedder, rows, corpus)

    folds = StratifiedGroupKFold(n_splits=FOLDS, shuffle=True, random_state=0)
    ours_pred, old_pred = np.empty_like(y), np.empty_like(y)
    for fold, (train, test) in enumerate(folds.split(ours, y, groups)):
        seed = settings.training.seed + fold
        ours_pred[test] = project_fit_predict(replace(settings, training=replace(settings.training, seed=seed)),
                                              ours[train], y[train], groups[train], ours[test], classes)
        old_pred[test] = old_recipe_fit_predict(old[train], y[train], old[test], len(classes), old, seed)
    leaky_pred = np.empty_like(y)
    for fold, (train, test) in enumerate(StratifiedKFold(FOLDS, shuffle=True, random_state=0).split(old, y)):
        leaky_pred[test] = old_recipe_fit_predict(old[train], y[train], old[test], len(classes), old, 100 + fold)

    results = [
        summarize("project defaults, grouped folds", y, ours_pred, field, classes, gun),
        summarize("old recipe, grouped folds", y, old_pred, field, classes, gun),
        summarize("old recipe, its own random split (leaky)", y, leaky_pred, field, classes, gun),
    ]
    figures = []
    for r in results:
        figures.append(Figure(f"{r['recipe']}: macro-F1", r["macro_f1"], ""))
        figures.append(Figure(f"{r['recipe']}: gun_shot recall", r["gun_shot_recall"], ""))
        if r["field_gun_shot_recall"] is not None:
            figures.append(Figure(f"{r['recipe']}: field gun_shot recall ({r['field_gun_shots']} clips)",
                                  r["field_gun_shot_recall"], ""))
    delta_f1 = results[0]["macro_f1"] - results[1]["macro_f1"]
    delta_recall = results[0]["gun_shot_recall"] - results[1]["gun_shot_recall"]
    figures.append(Figure("project - old recipe: macro-F1", delta_f1, "", ">= 0", delta_f1 >= 0))
    figures.append(Figure("project - old recipe: gun_shot recall", delta_recall, "", ">= 0", delta_recall >= 0))
    save_report("accuracy", figures, {"folds": FOLDS, "clips": len(rows), "results": results})
    return figures


if __name__ == "__main__":
    print(format_table(run()))
