"""Out-of-fold accuracy of what `retrain` ships, beside the logistic floor and the old recipe.

Repeated grouped cross-validation of the dev corpus: folds by the MANIFEST's source
recording (stratified), REPEATS different fold assignments, every clip scored once per
repeat by a model that never heard its recording. Each recipe runs with every seed in
SEEDS; a figure is reported as min / median / max over repeats x seeds, never as its
best run. Rows:

- project defaults: exactly what `retrain` ships. Inside each outer training fold the
  daemon's own split (group keys from file names, hashed 70/15/15) and the child's own
  head function (`heads.fit_logistic_head` or `fit_keras_head`, as configured) run,
  and the shipped Keras model with its priority threshold labels the outer test fold.
- previous default: the gradient-trained linear Keras head on mean+max pooling (what
  shipped before), through the same daemon split and child function.
- logistic floor: class-balanced logistic regression (scikit-learn) on mean+max pooled
  embeddings fitted on the whole outer training fold, argmax: the floor to beat.
- old recipe: first 4 s, librosa, mean pooling, one global mean/std, 512-256-128-64 MLP,
  random validation split, argmax; also scored on its own leaky random split.

Field gun shots (Gabon, Belize PAM detections) get their own recall row.
"""

from __future__ import annotations

import csv
import logging
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np

from benchmarks.common import Figure, copy_corpus, dev_corpus, format_table, save_report, yamnet_handle
from ecosight_daemon.artifacts.priority_rule import apply_priority_threshold
from ecosight_daemon.artifacts.split_rule import compile_group_patterns, group_key
from ecosight_daemon.config import Settings
from ecosight_daemon.embedding.tensorflow_runtime import YamnetEmbedder
from ecosight_daemon.ingest.limits import IngestLimits
from ecosight_daemon.ingest.one_shot import embed_pending
from ecosight_daemon.ingest.reconcile import reconcile
from ecosight_daemon.pooling import AudiosetHead, pool_patches
from ecosight_daemon.store.database import Database
from ecosight_daemon.training.dataset import assign_splits
from ecosight_daemon.training.evaluation import classification_metrics

logger = logging.getLogger(__name__)
FIELD_SOURCES = ("blegottesman/Gabon-Gunshot-Phase1-Code", "lydiakatsis/tropical_forest_gunshot_classifier")
FOLDS = 5
REPEATS = 3
SEEDS = (42, 1, 2)
FIGURES = ("macro_f1", "gun_shot_recall", "gun_shot_precision", "field_gun_shot_recall")


def cached_patches(embedder: YamnetEmbedder, rows: list[dict[str, str]], corpus: Path) -> list[np.ndarray]:
    """Per-patch embeddings of every clip, through the daemon's own ingest path."""
    with tempfile.TemporaryDirectory(prefix="ecosight-acc-") as tmp:
        audio = copy_corpus(corpus, Path(tmp) / "audio")
        store = Database.open(Path(tmp) / "cache.sqlite3")
        store.clips.adopt_model(embedder.model_id, embedder.fingerprint)
        limits = IngestLimits((".wav",), 600, 10**9)
        reconcile(store, audio, limits)
        embed_pending(store, embedder, audio, limits)
        patches = [store.clips.embeddings_for(r["sha256"]) for r in rows]
        store.close()
    return patches  # type: ignore[return-value]


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


def daemon_splits(settings: Settings, files: list[str], labels: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """The split codes (0 train, 1 val, 2 test) the daemon would give these files."""
    t = settings.training
    patterns = compile_group_patterns(t.group_patterns)
    keys = [group_key(f, patterns) for f in files]
    by_class: dict[str, set[str]] = {}
    for key, label in zip(keys, labels, strict=True):
        by_class.setdefault(label, set()).add(key)
    splits, _ = assign_splits(by_class, {}, (t.split[0], t.split[1], t.split[2]))
    codes = {"train": 0, "val": 1, "test": 2}
    return np.array([codes[splits[k].value] for k in keys], dtype=np.int8), np.array(keys)


def shipped_fit_predict(settings: Settings, features: np.ndarray, y: np.ndarray, files: list[str],
                        test_x: np.ndarray, classes: list[str]) -> np.ndarray:
    """What `retrain` ships, trained on these files, labelling test_x (threshold applied)."""
    from ecosight_daemon.artifacts.keras_model import predict_probabilities
    from ecosight_daemon.training.heads import fit_keras_head, fit_logistic_head
    from ecosight_daemon.training.recipe import TrainingRecipe

    splits, groups = daemon_splits(settings, files, [classes[i] for i in y])
    recipe = TrainingRecipe.from_settings(settings.training)  # the very recipe the training process receives
    if recipe.head == "logistic":
        fitted = fit_logistic_head(features, y, splits, groups, classes, recipe)
    else:
        fitted = fit_keras_head(features, y, splits, classes, recipe, lambda: False)
    assert fitted is not None
    priority = classes.index(recipe.priority_class)
    return apply_priority_threshold(predict_probabilities(fitted.model, test_x), priority, fitted.threshold)


def logistic_floor_fit_predict(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray) -> np.ndarray:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    model = make_pipeline(StandardScaler(), LogisticRegression(class_weight="balanced", max_iter=3000))
    return model.fit(train_x, train_y).predict(test_x)


def score(truth: np.ndarray, predicted: np.ndarray, field: np.ndarray, classes: list[str]) -> dict[str, float]:
    gun = classes.index("gun_shot")
    metrics = classification_metrics(truth, predicted, classes)["per_class_metrics"]["gun_shot"]
    shots = field & (truth == gun)
    return {
        "macro_f1": classification_metrics(truth, predicted, classes)["macro_f1"],
        "gun_shot_recall": metrics["recall"],
        "gun_shot_precision": metrics["precision"],
        "field_gun_shot_recall": float(np.mean(predicted[shots] == gun)),
    }


def spread(runs: list[dict[str, float]]) -> dict[str, list[float]]:
    return {k: [round(float(f(np.array([r[k] for r in runs]))), 4) for f in (np.min, np.median, np.max)]
            for k in FIGURES}


def run() -> list[Figure]:
    from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

    corpus = dev_corpus()
    with (corpus / "MANIFEST.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    settings = Settings()
    embedder = YamnetEmbedder.load(yamnet_handle())
    head: AudiosetHead = embedder.audioset_head()
    classes = sorted({r["class"] for r in rows})
    y = np.array([classes.index(r["class"]) for r in rows])
    groups = np.array([r["group"] for r in rows])
    files = [r["file"] for r in rows]
    field = np.array([r["source_repo"] in FIELD_SOURCES for r in rows])
    patches = cached_patches(embedder, rows, corpus)
    shipped_x = np.stack([pool_patches(p, settings.training.pooling, head) for p in patches])
    mean_max = np.stack([pool_patches(p, "mean_max") for p in patches])
    old = old_recipe_features(embedder, rows, corpus)
    previous = replace(settings, training=replace(settings.training, head="keras", pooling="mean_max",
                                                  priority_min_precision=0.7))

    runs: dict[str, list[dict[str, float]]] = {name: [] for name in
                                               ("project defaults", "previous default", "logistic floor", "old recipe")}
    per_seed_predictions: list[np.ndarray] = []
    for repeat in range(REPEATS):
        folds = list(StratifiedGroupKFold(n_splits=FOLDS, shuffle=True, random_state=repeat).split(y, y, groups))
        floor = np.empty_like(y)
        for train, test in folds:
            floor[test] = logistic_floor_fit_predict(mean_max[train], y[train], mean_max[test])
        runs["logistic floor"].append(score(y, floor, field, classes))  # no seed: one run per repeat
        for seed in SEEDS:
            seeded = replace(settings, training=replace(settings.training, seed=seed))
            seeded_previous = replace(previous, training=replace(previous.training, seed=seed))
            predictions = {name: np.empty_like(y) for name in ("project defaults", "previous default", "old recipe")}
            for train, test in folds:
                train_files = [files[i] for i in train]
                predictions["project defaults"][test] = shipped_fit_predict(
                    seeded, shipped_x[train], y[train], train_files, shipped_x[test], classes)
                predictions["previous default"][test] = shipped_fit_predict(
                    seeded_previous, mean_max[train], y[train], train_files, mean_max[test], classes)
                predictions["old recipe"][test] = old_recipe_fit_predict(old[train], y[train], old[test],
                                                                         len(classes), old, seed)
            for name, predicted in predictions.items():
                runs[name].append(score(y, predicted, field, classes))
            if repeat == 0:
                per_seed_predictions.append(predictions["project defaults"])
        logger.info("accuracy: repeat %d of %d done", repeat + 1, REPEATS)

    seed_independent = all(np.array_equal(per_seed_predictions[0], p) for p in per_seed_predictions)
    leaky = np.empty_like(y)
    for fold, (train, test) in enumerate(StratifiedKFold(FOLDS, shuffle=True, random_state=0).split(old, y)):
        leaky[test] = old_recipe_fit_predict(old[train], y[train], old[test], len(classes), old, 100 + fold)
    leaky_score = score(y, leaky, field, classes)

    table = {name: spread(r) for name, r in runs.items()}
    figures = []
    for name, figures_of in table.items():
        for key in FIGURES:
            low, median, high = figures_of[key]
            label = key.replace("_", " ") + (f" ({int((field & (y == classes.index('gun_shot'))).sum())} clips)"
                                             if key.startswith("field") else "")
            figures.append(Figure(f"{name}: {label}, min / median / max", median, f"{low:.3f} .. {high:.3f}"))
    figures.append(Figure("old recipe on its own leaky random split: macro-F1", leaky_score["macro_f1"], ""))
    ours = table["project defaults"]
    for key in ("macro_f1", "gun_shot_recall", "gun_shot_precision"):
        rivals = [table[name][key] for name in ("logistic floor", "old recipe", "previous default")]
        beats = all(ours[key][0] >= rival[0] - 1e-9 and ours[key][1] >= rival[1] - 1e-9 for rival in rivals)
        figures.append(Figure(f"project {key.replace('_', ' ')}: min and median vs every other row", ours[key][1],
                              "", ">= theirs", beats))
    f1_spread = ours["macro_f1"][2] - ours["macro_f1"][0]
    figures.append(Figure("project macro-F1 spread over repeats x seeds", f1_spread, "", "", None))
    figures.append(Figure("project predictions identical across seeds (repeat 0)", float(bool(seed_independent)),
                          "1 = yes"))
    save_report("accuracy", figures, {"folds": FOLDS, "repeats": REPEATS, "seeds": list(SEEDS),
                                      "clips": len(rows), "table": table, "leaky_old_recipe": leaky_score})
    return figures


def markdown_table(table: dict[str, dict[str, list[float]]]) -> str:
    lines = ["| recipe | " + " | ".join(FIGURES) + " |", "| --- |" + " --- |" * len(FIGURES)]
    for name, figures in table.items():
        cells = ("{:.3f} / {:.3f} / {:.3f}".format(*figures[k]) for k in FIGURES)
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    import json

    from benchmarks.common import RESULTS_DIR

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    print(format_table(run()))
    print(markdown_table(json.loads((RESULTS_DIR / "accuracy.json").read_text())["details"]["table"]))
