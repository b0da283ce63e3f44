"""The Keras classifier: build, fit, load, predict and export. Imports TensorFlow.

Normalization is a layer inside the model, adapted on the training split only, so
the saved model takes raw pooled embeddings and serving cannot drift from training.
Training is a function: it returns the model and its history and writes nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from ecosight_daemon.artifacts.keras_model import predict_probabilities
from ecosight_daemon.artifacts.linear_head import LogisticFit
from ecosight_daemon.artifacts.priority_rule import priority_label_tensor
from ecosight_daemon.pooling import AudiosetHead, pool_with
from ecosight_daemon.training.recipe import ClassifierParams

logger = logging.getLogger(__name__)


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


def keras_from_logistic(fit: LogisticFit) -> keras.Model:
    """The Keras model of a logistic fit: raw pooled features -> Normalization -> softmax.

    It computes exactly LogisticFit.probabilities, so it saves, loads and exports like
    any head the daemon trains.
    """
    dim, n_classes = fit.kernel.shape
    inputs = keras.Input(shape=(dim,), name="pooled_embedding")
    normalization = keras.layers.Normalization(mean=fit.mean, variance=np.square(fit.std), name="normalization")
    dense = keras.layers.Dense(n_classes, activation="softmax", name="probabilities")
    model = keras.Model(inputs, dense(normalization(inputs)), name="ecosight_classifier")
    dense.set_weights([fit.kernel, fit.bias])
    return model


def balanced_class_weights(labels: np.ndarray, n_classes: int) -> dict[int, float]:
    counts = np.bincount(labels, minlength=n_classes)
    return {c: float(len(labels) / (n_classes * counts[c])) if counts[c] else 0.0 for c in range(n_classes)}


@dataclass
class FitResult:
    model: keras.Model
    history: dict[str, list[float]]
    epochs_run: int
    stopped_early_by_request: bool


@dataclass
class _Plateau:
    """Keras's EarlyStopping and ReduceLROnPlateau rules, on one monitored loss."""

    patience: int
    lr_patience: int
    min_lr: float = 1e-5
    lr_min_delta: float = 1e-4
    best: float = float("inf")
    best_epoch: int = -1
    lr_best: float = float("inf")
    lr_wait: int = 0

    def improved(self, value: float, epoch: int) -> bool:
        if value < self.best:
            self.best, self.best_epoch = value, epoch
            return True
        return False

    def should_stop(self, epoch: int) -> bool:
        return epoch - self.best_epoch >= self.patience

    def next_learning_rate(self, value: float, lr: float) -> float:
        if value < self.lr_best - self.lr_min_delta:
            self.lr_best, self.lr_wait = value, 0
            return lr
        self.lr_wait += 1
        if self.lr_wait >= self.lr_patience and lr > self.min_lr:
            self.lr_wait = 0
            return max(lr * 0.5, self.min_lr)
        return lr


def fit_classifier(
    train_x: np.ndarray,
    train_y: np.ndarray,
    val_x: np.ndarray,
    val_y: np.ndarray,
    n_classes: int,
    params: ClassifierParams,
    should_stop: Callable[[], bool] = lambda: False,
    on_epoch: Callable[[int, float, float], None] | None = None,
) -> FitResult:
    """Fit with early stopping on validation loss (best weights restored), LR reduction on
    plateau, balanced class weights, shuffled mini-batches and fixed seeds.

    A whole epoch runs as one compiled TensorFlow loop: with Keras's `fit` each epoch
    paid ~130 ms of input-pipeline set-up, which dominated a retrain of a small head.
    """
    keras.utils.set_random_seed(params.seed)
    model = build_classifier(train_x, n_classes, params)
    optimizer = model.optimizer
    has_val = len(val_y) > 0
    if not has_val:
        logger.warning("the validation split is empty; early stopping watches the training loss")
    weights = balanced_class_weights(train_y, n_classes)
    x = tf.constant(train_x, tf.float32)
    y = tf.constant(train_y, tf.int32)
    w = tf.constant([weights[int(c)] for c in train_y], tf.float32)
    vx, vy = tf.constant(val_x, tf.float32), tf.constant(val_y, tf.int32)
    run_epoch = _epoch_function(model, optimizer, x, y, w, params.batch_size, vx, vy)
    plateau = _Plateau(params.patience, max(1, params.patience // 3))
    history: dict[str, list[float]] = {key: [] for key in ("loss", "accuracy", "val_loss", "val_accuracy",
                                                             "learning_rate")}
    best_weights = model.get_weights()
    stopped = False
    progress = ProgressLog()
    for epoch in range(params.epochs):
        loss, accuracy, val_loss, val_accuracy = (float(v) for v in run_epoch())
        if not has_val:
            val_loss, val_accuracy = loss, accuracy
        learning_rate = float(optimizer.learning_rate)
        for key, value in (("loss", loss), ("accuracy", accuracy), ("val_loss", val_loss),
                           ("val_accuracy", val_accuracy), ("learning_rate", learning_rate)):
            history[key].append(value)
        progress(epoch, loss, val_loss)
        if on_epoch is not None:
            on_epoch(epoch + 1, loss, val_loss)
        monitored = val_loss if has_val else loss
        if plateau.improved(monitored, epoch):
            best_weights = model.get_weights()
        optimizer.learning_rate.assign(plateau.next_learning_rate(monitored, learning_rate))
        if should_stop():
            stopped = True
            break
        if plateau.should_stop(epoch):
            break
    model.set_weights(best_weights)
    if not has_val:
        history = {k: v for k, v in history.items() if not k.startswith("val_")}
    return FitResult(model, history, len(history["loss"]), stopped)


def _epoch_function(
    model: keras.Model, optimizer: Any, x: tf.Tensor, y: tf.Tensor, w: tf.Tensor, batch_size: int,
    val_x: tf.Tensor, val_y: tf.Tensor,
) -> Callable[[], tuple[tf.Tensor, ...]]:
    """One shuffled pass over the training data, then the validation loss, as one tf.function.

    Each step updates the weights with TensorFlow's fused Adam kernel: the same update
    as the compiled Keras Adam (alpha = lr * sqrt(1 - b2^t) / (1 - b1^t), epsilon
    outside the root) in one op per weight instead of about fifteen, which matters when
    per-op overhead, not arithmetic, is the cost of a step.
    """
    count = int(x.shape[0])
    steps = -(-count // batch_size)
    adam = _FusedAdam(model.trainable_variables, optimizer)

    @tf.function
    def run_epoch() -> tuple[tf.Tensor, ...]:
        order = tf.random.shuffle(tf.range(count))
        total_loss = tf.constant(0.0)
        correct = tf.constant(0.0)
        for step in tf.range(steps):
            batch = order[step * batch_size:(step + 1) * batch_size]
            xb, yb, wb = tf.gather(x, batch), tf.gather(y, batch), tf.gather(w, batch)
            with tf.GradientTape() as tape:
                probabilities = model(xb, training=True)
                loss = _loss(model, yb, probabilities, wb)
            gradients = tape.gradient(loss, model.trainable_variables)
            adam.apply(gradients)
            total_loss += loss * tf.cast(tf.shape(yb)[0], tf.float32)
            correct += tf.reduce_sum(_hits(yb, probabilities))
        val_probabilities = model(val_x, training=False)
        val_loss = _loss(model, val_y, val_probabilities, tf.ones_like(val_y, tf.float32))
        val_accuracy = tf.reduce_mean(_hits(val_y, val_probabilities))
        return total_loss / count, correct / count, val_loss, val_accuracy

    return run_epoch


class _FusedAdam:
    """Adam slots for a model's weights, applied with tf.raw_ops.ResourceApplyAdam.

    It reads the learning rate from the Keras optimizer, so plateau reductions apply.
    """

    def __init__(self, variables: list[Any], optimizer: Any) -> None:
        self._variables = [v.value for v in variables]  # the tf.Variables behind Keras's
        self._slots = [(tf.Variable(tf.zeros_like(v)), tf.Variable(tf.zeros_like(v))) for v in self._variables]
        self._optimizer = optimizer
        self._beta_1, self._beta_2 = float(optimizer.beta_1), float(optimizer.beta_2)
        self._epsilon = float(optimizer.epsilon)
        self._beta_1_power = tf.Variable(1.0)
        self._beta_2_power = tf.Variable(1.0)

    def apply(self, gradients: list[tf.Tensor]) -> None:
        self._beta_1_power.assign(self._beta_1_power * self._beta_1)
        self._beta_2_power.assign(self._beta_2_power * self._beta_2)
        learning_rate = tf.cast(self._optimizer.learning_rate, tf.float32)
        for variable, gradient, (m, v) in zip(self._variables, gradients, self._slots, strict=True):
            tf.raw_ops.ResourceApplyAdam(
                var=variable.handle, m=m.handle, v=v.handle, beta1_power=self._beta_1_power,
                beta2_power=self._beta_2_power, lr=learning_rate, beta1=self._beta_1, beta2=self._beta_2,
                epsilon=self._epsilon, grad=gradient,
            )


def _loss(model: keras.Model, labels: tf.Tensor, probabilities: tf.Tensor, weights: tf.Tensor) -> tf.Tensor:
    """Keras's training loss: mean weighted cross-entropy plus the L2 penalties."""
    loss = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(labels, probabilities) * weights)
    if model.losses:
        loss += tf.add_n(model.losses)
    return loss


def _hits(labels: tf.Tensor, probabilities: tf.Tensor) -> tf.Tensor:
    return tf.cast(tf.equal(tf.argmax(probabilities, axis=-1, output_type=tf.int32), labels), tf.float32)


def warm_up() -> None:
    """Trace and run a tiny fit once, so a fresh process's first real fit skips the
    one-time costs (autograph conversion, kernel loading): ~0.5 s off a retrain."""
    rng = np.random.default_rng(0)
    features = rng.standard_normal((32, 8)).astype(np.float32)
    labels = np.arange(32) % 2
    params = ClassifierParams((), 0.0, False, 1e-3, 1e-3, 2, 16, 1, 0)
    fit = fit_classifier(features, labels, features, labels, 2, params)
    predict_probabilities(fit.model, features)


class ProgressLog:
    """One log line every few epochs, for journald."""

    def __init__(self, every: int = 10) -> None:
        self._every = every

    def __call__(self, epoch: int, loss: float, val_loss: float) -> None:
        if (epoch + 1) % self._every == 0:
            logger.info("epoch %d: loss %.4f, val_loss %.4f", epoch + 1, loss, val_loss)


def save_classifier(model: keras.Model, path: Path) -> None:
    model.save(path)


class TensorflowOps:
    """pooling.ArrayOps in TensorFlow, for the exported graphs."""

    def mean(self, x: tf.Tensor) -> tf.Tensor:
        return tf.reduce_mean(x, axis=0)

    def max(self, x: tf.Tensor) -> tf.Tensor:
        return tf.reduce_max(x, axis=0)

    def std(self, x: tf.Tensor) -> tf.Tensor:
        return tf.math.reduce_std(x, axis=0)

    def concat(self, parts: list[tf.Tensor]) -> tf.Tensor:
        return tf.concat(parts, axis=0)

    def logits(self, patches: tf.Tensor, head: AudiosetHead) -> tf.Tensor:
        return tf.matmul(patches, tf.constant(head.kernel)) + tf.constant(head.bias)


def pool_tensor(patches: tf.Tensor, method: str, head: AudiosetHead | None = None) -> tf.Tensor:
    """pooling.pool_with on TensorFlow tensors (the same definition as pool_patches)."""
    return pool_with(TensorflowOps(), patches, method, head)


class EndToEndModel(tf.Module):
    """16 kHz mono float32 waveform -> class probabilities and label, YAMNet included."""

    def __init__(
        self, yamnet: Any, classifier: keras.Model, classes: list[str], pooling: str,
        priority_index: int | None, threshold: float | None, head: AudiosetHead | None = None,
    ) -> None:
        super().__init__(name="ecosight_end_to_end")
        self.yamnet = yamnet
        self.classifier = classifier
        self.class_names = tf.constant(classes)
        self._pooling = pooling
        self._head = head
        self._priority_index = priority_index
        self._threshold = threshold

    @tf.function(input_signature=[tf.TensorSpec(shape=[None], dtype=tf.float32, name="waveform")])
    def __call__(self, waveform: tf.Tensor) -> dict[str, tf.Tensor]:
        _, embeddings, _ = self.yamnet(waveform)
        pooled = pool_tensor(embeddings, self._pooling, self._head)
        probabilities = self.classifier(pooled[tf.newaxis, :], training=False)[0]
        label_index = priority_label_tensor(probabilities, self._priority_index, self._threshold)
        return {
            "probabilities": probabilities,
            "label_index": label_index,
            "label": tf.gather(self.class_names, label_index),
        }


def export_end_to_end(
    yamnet_handle: str, classifier: keras.Model, classes: list[str], pooling: str,
    priority_index: int | None, threshold: float | None, target: Path, head: AudiosetHead | None = None,
) -> None:
    """Save a SavedModel a field device can load with tf.saved_model.load alone."""
    import tensorflow_hub as hub

    module = EndToEndModel(hub.load(yamnet_handle), classifier, classes, pooling, priority_index, threshold, head)
    tf.saved_model.save(module, str(target), signatures={"serving_default": module.__call__})
