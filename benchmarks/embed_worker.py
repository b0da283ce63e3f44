"""One timed embedding pass in a fresh process, as production runs it (no other runtime's
thread pools in the same process): `python -m benchmarks.embed_worker MODE AUDIO MODELS`.

MODE: `tensorflow` or `onnxruntime` (model only: the decoded waveforms through the
loaded model; decoding is not timed), or `end-to-end` (files on disk to committed cache
rows on the default runtime). Prints {"seconds", "patches"} as JSON.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import yamnet_handle
from ecosight_daemon.audio import decode_audio
from ecosight_daemon.embedding.loader import load_embedder
from ecosight_daemon.ingest.limits import IngestLimits
from ecosight_daemon.ingest.naming import walk_audio_dir
from ecosight_daemon.ingest.one_shot import embed_pending
from ecosight_daemon.ingest.reconcile import reconcile
from ecosight_daemon.store.database import Database

LIMITS = IngestLimits(extensions=(".wav", ".flac", ".ogg"), max_duration_s=600, max_file_bytes=10**9)


def main() -> int:
    mode, audio, models = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
    embedder = load_embedder(yamnet_handle(), models, "tensorflow" if mode == "tensorflow" else "onnxruntime")
    waveforms = [decode_audio((audio / f.relpath).read_bytes(), 600).waveform
                 for f in walk_audio_dir(audio, LIMITS.extensions)]
    embedder.embed(waveforms[0])  # warm-up: TensorFlow traces its graph on the first call
    if mode == "end-to-end":
        with tempfile.TemporaryDirectory() as tmp:
            store = Database.open(Path(tmp) / "cache.sqlite3")
            store.clips.adopt_model(embedder.model_id, embedder.fingerprint)
            started = time.perf_counter()
            reconcile(store, audio, LIMITS)
            report = embed_pending(store, embedder, audio, LIMITS)
            seconds = time.perf_counter() - started
            store.close()
        patches = report.patches
    else:
        started = time.perf_counter()
        patches = sum(len(embedder.embed(waveform)) for waveform in waveforms)
        seconds = time.perf_counter() - started
    print(json.dumps({"seconds": seconds, "patches": patches}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
