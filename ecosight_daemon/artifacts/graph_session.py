"""ONNX Runtime sessions for the event detector's own small graphs (the shot CNN, the context
trees). They run between YAMNet's chunks on the same cores, so their threads must not spin
once a run returns: spinning, they took the cores from YAMNet's next chunk and from the
NumPy front end (in one process, an hour of detection with the CNN and trees shipping
6.4 s -> 4.5 s, YAMNet's own part 4.3 s -> 2.9 s, the trees' scoring unchanged)."""

from __future__ import annotations

from typing import Any

from ecosight_daemon.util.cpus import usable_cpus


def graph_session(model: bytes) -> Any:
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = usable_cpus()
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return onnxruntime.InferenceSession(model, options, providers=["CPUExecutionProvider"])
