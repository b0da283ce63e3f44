"""YAMNet behind one Embedder protocol: model identity, the TensorFlow and ONNX runtimes, the
conversion, the NumPy front end."""
