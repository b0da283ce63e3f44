"""Training the shot spectrogram CNN (artifacts/shot_spectrogram.py says what it is) with
Keras, in the training process, and reading its weights out for NumPy."""

from __future__ import annotations

from typing import Any

import numpy as np

from ecosight_daemon.artifacts.shot_spectrogram import POOL, ShotSpectrogramModel, decoded

BLOCKS = (16, 32)  # convolution widths before the last one, each followed by pooling
LAST_WIDTH = 64
EPOCHS = 8
POSITIVE_WEIGHT_SHARE = 0.25  # of full class balance: a shot patch weighs (negatives / positives) / 4


def build(seed: int, frames: int = 96 // POOL, bands: int = 64 // POOL) -> Any:
    import keras

    keras.utils.set_random_seed(seed)
    layers = keras.layers
    inputs = keras.Input((frames, bands, 1))
    x = inputs
    for width in BLOCKS:
        x = layers.Conv2D(width, 3, padding="same", activation="relu")(x)
        x = layers.BatchNormalization(epsilon=1e-3)(x)
        x = layers.MaxPooling2D(2)(x)
    x = layers.Conv2D(LAST_WIDTH, 3, padding="same", activation="relu")(x)
    x = layers.GlobalMaxPooling2D()(x)
    x = layers.Dropout(0.3)(x)
    model = keras.Model(inputs, layers.Dense(1)(x))
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=keras.losses.BinaryCrossentropy(from_logits=True))
    return model


def fit_shot_spectrogram(codes: np.ndarray, is_shot: np.ndarray, seed: int,
                         epochs: int = EPOCHS) -> ShotSpectrogramModel:
    """codes: (N, 48, 32) spectrogram_inputs; is_shot: (N,) 0/1."""
    y = np.asarray(is_shot, np.float32)
    positives = max(1.0, float(y.sum()))
    model = build(seed, codes.shape[1], codes.shape[2])
    model.fit(decoded(codes)[..., None], y, batch_size=64, epochs=epochs, verbose=0,
              class_weight={0: 1.0, 1: max(1.0, (len(y) - positives) / positives * POSITIVE_WEIGHT_SHARE)})
    return weights_of(model)


def weights_of(model: Any) -> ShotSpectrogramModel:
    import keras

    convolutions, normalizations = [], []
    dense = None
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2D):
            kernel, bias = layer.get_weights()
            convolutions.append((kernel.astype(np.float32), bias.astype(np.float32)))
        elif isinstance(layer, keras.layers.BatchNormalization):
            gamma, beta, mean, variance = (w.astype(np.float32) for w in layer.get_weights())
            normalizations.append((gamma, beta, mean, variance))
        elif isinstance(layer, keras.layers.Dense):
            kernel, bias = layer.get_weights()
            dense = (kernel.astype(np.float32), bias.astype(np.float32))
    if dense is None:
        raise ValueError("the model has no dense layer")
    return ShotSpectrogramModel(convolutions, normalizations, dense)
