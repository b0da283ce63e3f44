"""Embed the pending files of a large archive on a Ray cluster, into the same cache.

Two Ray Data stages over the pending work units: a CPU stage that reads, hashes and
decodes (`file_steps.prepare_file`), and an inference stage of actors that each load
YAMNet once (`file_steps.embed_prepared`). The driver writes every result into the SQLite
cache in batched transactions with the same function the daemon uses
(`file_steps.record_result`), so bad files end as `failed` rows with reasons, never as a
failed job. Ray is an optional extra: `pip install '.[ray]'`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ecosight_daemon.audio import DecodedAudio
from ecosight_daemon.errors import EcosightError
from ecosight_daemon.ingest.file_steps import (
    EmbeddedFile,
    EmbedReport,
    PreparedFile,
    embed_prepared,
    prepare_file,
    record_result,
)
from ecosight_daemon.ingest.limits import IngestLimits
from ecosight_daemon.ingest.naming import FoundFile
from ecosight_daemon.store.clip_index import FileRecord, FileState
from ecosight_daemon.store.database import Database
from ecosight_daemon.util.progress import ProgressReporter

logger = logging.getLogger(__name__)

WRITE_BATCH = 64  # results per driver transaction
DECODE_BATCH = 8
EMBED_BATCH = 8


def _import_ray() -> Any:
    try:
        import ray
    except ImportError as exc:
        raise EcosightError(
            "the Ray engine needs ray: install it with `pip install '.[ray]'` (or `make install`)"
        ) from exc
    return ray


# --- rows <-> objects: Ray moves plain columns, so work units travel as dicts ---------------

def _record_row(record: FileRecord) -> dict[str, Any]:
    return {"path": record.path, "label": record.label, "sha256": record.sha256 or "",
            "size": record.size, "mtime_ns": record.mtime_ns}


def _record_from(row: dict[str, Any]) -> FileRecord:
    return FileRecord(str(row["path"]), str(row["label"]), str(row["sha256"]) or None, int(row["size"]),
                      int(row["mtime_ns"]), FileState.PENDING, None)


def _prepared_row(prepared: PreparedFile) -> dict[str, Any]:
    found, audio = prepared.found, prepared.audio
    return {
        **_record_row(prepared.record),
        "gone": found is None,
        "found_size": found.size if found else 0,
        "found_mtime_ns": found.mtime_ns if found else 0,
        "found_problem": (found.problem or "") if found else "",
        "content_sha256": prepared.sha256 or "",
        "problem": prepared.problem or "",
        "changed": prepared.changed_while_reading,
        "waveform": audio.waveform.tobytes() if audio else b"",
        "source_rate": audio.source_sample_rate if audio else 0,
        "source_channels": audio.source_channels if audio else 0,
    }


def _prepared_from(row: dict[str, Any]) -> PreparedFile:
    record = _record_from(row)
    found = None if row["gone"] else FoundFile(record.path, record.label, int(row["found_size"]),
                                               int(row["found_mtime_ns"]), str(row["found_problem"]) or None)
    waveform = bytes(row["waveform"])
    audio = DecodedAudio(np.frombuffer(waveform, dtype=np.float32).copy(), int(row["source_rate"]),
                         int(row["source_channels"])) if waveform else None
    return PreparedFile(record, found, str(row["content_sha256"]) or None, audio,
                        str(row["problem"]) or None, bool(row["changed"]))


def _rows(batch: dict[str, np.ndarray]) -> Iterator[dict[str, Any]]:
    keys = list(batch)
    for i in range(len(batch[keys[0]]) if keys else 0):
        yield {key: batch[key][i] for key in keys}


def _columns(rows: list[dict[str, Any]]) -> dict[str, np.ndarray]:
    columns: dict[str, np.ndarray] = {}
    for key in rows[0]:
        column = np.empty(len(rows), dtype=object)
        column[:] = [row[key] for row in rows]
        columns[key] = column
    return columns


# --- the two stages ---------------------------------------------------------------------------

def decode_stage(batch: dict[str, np.ndarray], audio_dir: str, limits: IngestLimits,
                 cached: frozenset[str]) -> dict[str, np.ndarray]:
    """CPU stage: read, hash and decode (runs on any node that sees the audio paths)."""
    rows = [_prepared_row(prepare_file(Path(audio_dir), _record_from(row), limits, set(cached)))
            for row in _rows(batch)]
    return _columns(rows)


class EmbedActor:
    """Inference stage: one YAMNet per actor, loaded once, on the configured runtime (the
    driver makes the ONNX body before the actors start, so they find it ready)."""

    def __init__(self, handle: str, models_dir: str = "", runtime: str = "tensorflow") -> None:
        from ecosight_daemon.embedding.loader import load_embedder

        self.embedder = load_embedder(handle, Path(models_dir), runtime)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = []
        for row in _rows(batch):
            result = embed_prepared(self.embedder, _prepared_from(row))
            embeddings = result.embeddings
            out.append({
                **row,
                "waveform": b"",  # no need to ship the audio back to the driver
                "duration_s": result.prepared.audio.duration_s if result.prepared.audio else 0.0,
                "embeddings": embeddings.astype(np.float32).tobytes() if embeddings is not None else b"",
                "patches": int(embeddings.shape[0]) if embeddings is not None else 0,
                "embed_problem": result.problem or "",
                "embed_seconds": result.seconds,
                "model_id": self.embedder.model_id,
            })
        return _columns(out)


def _result_from(row: dict[str, Any], dim: int) -> EmbeddedFile:
    embeddings = (np.frombuffer(bytes(row["embeddings"]), dtype=np.float32).reshape(int(row["patches"]), dim)
                  if row["patches"] else None)
    return EmbeddedFile(_prepared_from({**row, "waveform": b""}), embeddings, str(row["embed_problem"]) or None,
                        float(row["embed_seconds"]), float(row["duration_s"]))


def embed_pending_with_ray(
    store: Database,
    audio_dir: Path,
    limits: IngestLimits,
    handle: str,
    dim: int,
    address: str | None = None,
    actors: int | None = None,
    timings: dict[str, float] | None = None,
    models_dir: Path | None = None,
    runtime: str = "tensorflow",
) -> EmbedReport:
    """Embed every pending file on Ray; results land in `store` from this (driver) process.

    `timings`, if given, receives startup_s, pipeline_s and driver_write_s.
    """
    ray = _import_ray()
    started = time.monotonic()
    timings = {} if timings is None else timings
    timings["driver_write_s"] = 0.0
    report = EmbedReport()
    pending = store.clips.files(FileState.PENDING)
    if not pending:
        return report
    if address:
        ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING)
    else:
        ray.init(include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
    try:
        import ray.data

        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False
        cpus = int(ray.cluster_resources().get("CPU", 1))
        actors = actors or max(1, cpus // 2)
        logger.info("embedding %d pending files on Ray (%d CPUs, %d inference actors)", len(pending), cpus, actors)
        dataset = ray.data.from_items([_record_row(r) for r in pending])
        # Different CPU requests keep Ray from fusing the stages into one serial actor:
        # decoding the next files overlaps with inference on these.
        dataset = dataset.map_batches(
            decode_stage, batch_size=DECODE_BATCH, batch_format="numpy", num_cpus=0.5,
            fn_kwargs={"audio_dir": str(audio_dir), "limits": limits, "cached": frozenset(store.clips.cached_hashes())},
        )
        dataset = dataset.map_batches(
            EmbedActor, batch_size=EMBED_BATCH, batch_format="numpy", num_cpus=1,
            compute=ray.data.ActorPoolStrategy(size=actors),
            fn_constructor_kwargs={"handle": handle, "models_dir": str(models_dir or ""), "runtime": runtime},
        )
        progress = ProgressReporter("embedded")
        done = 0
        timings["startup_s"] = time.monotonic() - started
        pipeline_started = time.monotonic()
        for batch in dataset.iter_batches(batch_size=WRITE_BATCH, batch_format="numpy"):
            rows = list(_rows(batch))
            for row in rows:
                if row["model_id"] != store.clips.model_id:
                    raise EcosightError(
                        f"a Ray worker embedded with model {row['model_id']} but the cache uses "
                        f"{store.clips.model_id}; every node must load the same YAMNet (check the handle)"
                    )
            writing = time.monotonic()
            with store.batch():
                for row in rows:
                    record_result(store, _result_from(row, dim), report)
            timings["driver_write_s"] += time.monotonic() - writing
            done += len(rows)
            progress(done, len(pending))
        timings["pipeline_s"] = time.monotonic() - pipeline_started
    finally:
        ray.shutdown()
    report.seconds = time.monotonic() - started
    return report
