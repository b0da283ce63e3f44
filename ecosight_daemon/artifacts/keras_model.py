"""A shipped Keras classifier (`yamnet_classifier_v2.keras`) loaded safely and applied.
TensorFlow loads with it: callers import this lazily."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import tensorflow as tf


def predict_probabilities(model: keras.Model, features: np.ndarray) -> np.ndarray:
    if len(features) == 0:
        return np.zeros((0, model.output_shape[-1]), dtype=np.float32)
    return np.asarray(model(tf.constant(features, dtype=tf.float32), training=False))


def load_classifier(path: Path) -> keras.Model:
    """Load a saved classifier; safe_mode refuses models that carry arbitrary code."""
    return keras.saving.load_model(path, compile=False, safe_mode=True)
