"""The Keras classifier: build, fit, load, predict and export. Imports TensorFlow.

Normalization is a layer inside the model, adapted on the training split only, so
the saved model takes raw pooled embeddings and serving cannot drift from training.
Training is a function: it returns the model and its history and writes nothing.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ClassifierParams:
    hidden_units: tuple[int, ...]
    dropout: float
    batch_norm: bool
    learning_rate: float
    l2: float
    epochs: int
    batch_size: int
    patience: int
    seed: int


def build_classifier(train_features: np.ndarray, n_classes: int, params: ClassifierParams) -> keras.Model:
    """Raw pooled embedding -> Normalization (adapted here) -> hidden layers -> softmax."""
    normalization = keras.layers.Normalization(name="normalization")
    normalization.adapt(train_features)
    inputs = keras.Input(shape=(train_features.shape[1],), name="pooled_embedding")
    x = normalization(inputs)
    regularizer = keras.regularizers.l2(params.l2) if params.l2 > 0 else None
    for index, units in enumerate(params.hidden_units):
        x = keras.layers.Dense(units, kernel_regularizer=regularizer, name=f"dense_{index}")(x)
        if params.batch_norm:
            x = keras.layers.BatchNormalization(name=f"batch_norm_{index}")(x)
        x = keras.layers.Activation("relu", name=f"relu_{index}")(x)
        if params.dropout > 0:
            x = keras.layers.Dropout(params.dropout, name=f"dropout_{index}")(x)
    outputs = keras.layers.Dense(n_classes, activation="softmax", kernel_regularizer=regularizer,
                                 name="probabilities")(x)
    model = keras.Model(inputs, outputs, name="ecosight_classifier")
    model.compile(
        optimizer=keras.optimizers.Adam(params.learning_rate),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    return model


def balanced_class_weights(labels: np.ndarray, n_classes: int) -> dict[int, float]:
    counts = np.bincount(labels, minlength=n_classes)
    return {c: float(len(labels) / (n_classes * counts[c])) if counts[c] else 0.0 for c in range(n_classes)}


class StopWhenAsked(keras.callbacks.Callback):
    """Ends training at the next epoch boundary once should_stop() says so."""

    def __init__(self, should_stop: Callable[[], bool]) -> None:
        super().__init__()
        self._should_stop = should_stop
        self.stopped = False

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if self._should_stop():
            self.stopped = True
            self.model.stop_training = True


class ProgressLog(keras.callbacks.Callback):
    """One log line every few epochs, for journald."""

    def __init__(self, every: int = 10) -> None:
        super().__init__()
        self._every = every

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if (epoch + 1) % self._every == 0 and logs:
            logger.info("epoch %d: loss %.4f, val_loss %.4f", epoch + 1, logs.get("loss", float("nan")),
                        logs.get("val_loss", float("nan")))


@dataclass
class FitResult:
    model: keras.Model
    history: dict[str, list[float]]
    epochs_run: int
    stopped_early_by_request: bool


def fit_classifier(
    train_x: np.ndarray,
    train_y: np.ndarray,
    val_x: np.ndarray,
    val_y: np.ndarray,
    n_classes: int,
    params: ClassifierParams,
    should_stop: Callable[[], bool] = lambda: False,
) -> FitResult:
    """Fit with early stopping on validation loss (best weights restored), LR reduction on
    plateau, balanced class weights and fixed seeds."""
    keras.utils.set_random_seed(params.seed)
    model = build_classifier(train_x, n_classes, params)
    has_val = len(val_y) > 0
    monitor = "val_loss" if has_val else "loss"
    if not has_val:
        logger.warning("the validation split is empty; early stopping watches the training loss")
    stopper = StopWhenAsked(should_stop)
    callbacks = [
        keras.callbacks.EarlyStopping(monitor=monitor, patience=params.patience, restore_best_weights=True),
        keras.callbacks.ReduceLROnPlateau(monitor=monitor, factor=0.5, patience=max(1, params.patience // 3),
                                          min_lr=1e-5),
        stopper,
        ProgressLog(),
    ]
    fitted = model.fit(
        train_x, train_y,
        validation_data=(val_x, val_y) if has_val else None,
        epochs=params.epochs,
        batch_size=params.batch_size,
        class_weight=balanced_class_weights(train_y, n_classes),
        callbacks=callbacks,
        shuffle=True,
        verbose=0,
    )
    history = {key: [float(v) for v in values] for key, values in fitted.history.items()}
    return FitResult(model, history, len(history.get("loss", [])), stopper.stopped)


def predict_probabilities(model: keras.Model, features: np.ndarray) -> np.ndarray:
    if len(features) == 0:
        return np.zeros((0, model.output_shape[-1]), dtype=np.float32)
    return np.asarray(model(tf.constant(features, dtype=tf.float32), training=False))


def load_classifier(path: Path) -> keras.Model:
    """Load a saved classifier; safe_mode refuses models that carry arbitrary code."""
    return keras.saving.load_model(path, compile=False, safe_mode=True)


def save_classifier(model: keras.Model, path: Path) -> None:
    model.save(path)


def pool_tensor(patches: tf.Tensor, method: str) -> tf.Tensor:
    """TensorFlow twin of features.pool_patches, for the end-to-end export."""
    if method == "mean":
        return tf.reduce_mean(patches, axis=0)
    if method == "mean_max":
        return tf.concat([tf.reduce_mean(patches, axis=0), tf.reduce_max(patches, axis=0)], axis=0)
    if method == "mean_std":
        return tf.concat([tf.reduce_mean(patches, axis=0), tf.math.reduce_std(patches, axis=0)], axis=0)
    raise ValueError(f"unknown pooling {method!r}")


class EndToEndModel(tf.Module):
    """16 kHz mono float32 waveform -> class probabilities and label, YAMNet included."""

    def __init__(
        self, yamnet: Any, classifier: keras.Model, classes: list[str], pooling: str,
        priority_index: int | None, threshold: float | None,
    ) -> None:
        super().__init__(name="ecosight_end_to_end")
        self.yamnet = yamnet
        self.classifier = classifier
        self.class_names = tf.constant(classes)
        self._pooling = pooling
        self._priority = -1 if priority_index is None or threshold is None else priority_index
        self._threshold = 2.0 if threshold is None else float(threshold)

    @tf.function(input_signature=[tf.TensorSpec(shape=[None], dtype=tf.float32, name="waveform")])
    def __call__(self, waveform: tf.Tensor) -> dict[str, tf.Tensor]:
        _, embeddings, _ = self.yamnet(waveform)
        pooled = pool_tensor(embeddings, self._pooling)
        probabilities = self.classifier(pooled[tf.newaxis, :], training=False)[0]
        label_index = tf.argmax(probabilities, output_type=tf.int32)
        if self._priority >= 0:
            label_index = tf.where(probabilities[self._priority] >= self._threshold,
                                   tf.constant(self._priority, tf.int32), label_index)
        return {
            "probabilities": probabilities,
            "label_index": label_index,
            "label": tf.gather(self.class_names, label_index),
        }


def export_end_to_end(
    yamnet_handle: str, classifier: keras.Model, classes: list[str], pooling: str,
    priority_index: int | None, threshold: float | None, target: Path,
) -> None:
    """Save a SavedModel a field device can load with tf.saved_model.load alone."""
    import tensorflow_hub as hub

    module = EndToEndModel(hub.load(yamnet_handle), classifier, classes, pooling, priority_index, threshold)
    tf.saved_model.save(module, str(target), signatures={"serving_default": module.__call__})
