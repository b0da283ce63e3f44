"""From files on disk to committed cache rows: walk, reconcile the index, embed what is pending.

Reading, hashing and decoding the next file happen on a worker thread while the
current one runs through the model; every database write stays on the caller's
thread, one transaction per file.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import stat
import time
import unicodedata
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import numpy as np

from . import pause
from .audio import DecodedAudio, decode_audio, is_audio_name, is_ignored_name
from .config import Settings
from .digest import sha256_of
from .embedder import Embedder
from .errors import AudioDecodeError
from .store import EmbeddingStore, FileRecord, FileState

logger = logging.getLogger(__name__)

NO_CLASS_REASON = "not in a class folder; move it into <audio_dir>/<class>/"
# A label ends up in logs, JSON, CSV manifests, HTML reports and the exported model:
# letters (any script), digits and a few separators, starting with a letter or digit.
USABLE_LABEL = re.compile(r"[^\W_](?:[\w .+()-]{0,62}[\w.+()-])?")
Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class IngestLimits:
    extensions: tuple[str, ...]
    max_duration_s: float
    max_file_bytes: int
    min_duration_s: float = 0.0
    min_peak_dbfs: float | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> IngestLimits:
        audio = settings.audio
        return cls(audio.extensions, audio.max_duration_s, int(audio.max_file_mb * 1_000_000),
                   audio.min_duration_s, audio.min_peak_dbfs)


@dataclass(frozen=True)
class FoundFile:
    """An audio-named entry under audio_dir, with why it cannot be used, if it cannot."""

    relpath: str
    label: str
    size: int
    mtime_ns: int
    problem: str | None = None


def label_of(relpath: str) -> str:
    """The class a path belongs to: its first folder under audio_dir, '' if none."""
    parts = relpath.split("/")
    return parts[0] if len(parts) > 1 else ""


def label_problem(label: str) -> str | None:
    if USABLE_LABEL.fullmatch(label):
        return None
    return (f"class folder name {shown(label)!r} cannot be a label: use at most 64 letters, digits, "
            "spaces and _ . + ( ) -, starting with a letter or digit; rename the folder")


def index_path(path: Path, audio_dir: Path) -> tuple[str, str | None]:
    """A path's key in the index (text SQLite can store), and a problem if its name is unusable.

    Linux names are bytes; one that is not UTF-8 is indexed under an escaped form and
    never read, so it cannot be mistaken for another file.
    """
    relpath = path.relative_to(audio_dir).as_posix()
    try:
        relpath.encode("utf-8")
    except UnicodeEncodeError:
        escaped = os.fsencode(relpath).decode("utf-8", "backslashreplace")
        return escaped, "the file or folder name is not valid UTF-8; rename it"
    return relpath, None


def shown(text: str) -> str:
    """Text for a log line: control characters (a newline in a file name) escaped."""
    if not any(unicodedata.category(c) == "Cc" for c in text):
        return text
    return "".join(c.encode("unicode_escape").decode() if unicodedata.category(c) == "Cc" else c for c in text)


MAX_FOLDER_DEPTH = 8  # folders below a class folder that are looked into; deeper ones are ignored


def walk_audio_dir(audio_dir: Path, extensions: tuple[str, ...]) -> Iterator[FoundFile]:
    """Every audio-named entry below audio_dir; hidden folders and temporary names are skipped.

    An explicit stack, not recursion: a tree thousands of folders deep (anyone can
    write one into audio_dir) costs memory for its width, not the interpreter's stack.
    Folders more than MAX_FOLDER_DEPTH below a class folder are not entered (logged).
    """
    stack: list[tuple[Path, int]] = [(audio_dir, 0)]
    too_deep: list[Path] = []
    while stack:
        folder, depth = stack.pop()
        try:
            with os.scandir(folder) as listing:
                entries = sorted(listing, key=lambda entry: entry.name, reverse=True)
        except OSError as exc:
            if folder == audio_dir:
                raise
            logger.warning("cannot list folder %s: %s", shown(os.fsdecode(folder)), exc.strerror or exc)
            continue
        files = []
        for entry in entries:
            if is_ignored_name(entry.name):
                continue
            if entry.is_dir(follow_symlinks=False):
                if depth > MAX_FOLDER_DEPTH:
                    too_deep.append(Path(entry.path))
                else:
                    stack.append((Path(entry.path), depth + 1))
            elif is_audio_name(entry.name, extensions):
                files.append(Path(entry.path))
        for path in reversed(files):
            relpath, name_problem = index_path(path, audio_dir)
            found = describe_entry(path, relpath, name_problem)
            if found is not None:
                yield found
    _report_too_deep(too_deep, audio_dir)


_reported_too_deep: set[str] = set()


def _report_too_deep(folders: list[Path], audio_dir: Path) -> None:
    """One warning per newly seen too-deep folder, not one per rescan."""
    fresh = [f for f in folders if str(f) not in _reported_too_deep]
    if fresh:
        if len(_reported_too_deep) > 10_000:
            _reported_too_deep.clear()
        _reported_too_deep.update(str(f) for f in fresh)
        logger.warning("ignored %d folder(s) more than %d levels below a class folder, e.g. %s",
                       len(fresh), MAX_FOLDER_DEPTH, shown(fresh[0].relative_to(audio_dir).as_posix()[:200]))


def describe_entry(path: Path, relpath: str, name_problem: str | None = None) -> FoundFile | None:
    """lstat one entry; None when it vanished meanwhile."""
    try:
        info = path.lstat()
    except FileNotFoundError:
        return None
    except OSError as exc:
        return FoundFile(relpath, label_of(relpath), 0, 0, f"cannot stat file ({exc.strerror})")
    label = label_of(relpath)
    problem = name_problem or _entry_problem(info.st_mode, label)
    return FoundFile(relpath, label, info.st_size, info.st_mtime_ns, problem)


def _entry_problem(mode: int, label: str) -> str | None:
    if stat.S_ISLNK(mode):
        return "symbolic link (not followed)"
    if not stat.S_ISREG(mode):
        return "not a regular file"
    if not label:
        return NO_CLASS_REASON
    return label_problem(label)


@dataclass
class ReconcileReport:
    new: int = 0
    changed: int = 0
    removed: int = 0
    unchanged: int = 0


def reconcile(
    store: EmbeddingStore, audio_dir: Path, limits: IngestLimits, hash_files: bool = False
) -> ReconcileReport:
    """Bring the index in line with the folder: new, changed and deleted files.

    With hash_files, new and changed files are hashed now, so renames and label
    conflicts show at once; otherwise hashing waits for `embed_pending`.
    """
    report = ReconcileReport()
    if not audio_dir.is_dir():
        # An unmounted share or a mistyped path must not make the index forget everything.
        logger.error("audio folder %s is missing; not reconciling until it is back", audio_dir)
        return report
    seen: set[str] = set()
    for found in walk_audio_dir(audio_dir, limits.extensions):
        seen.add(found.relpath)
        record = store.file_record(found.relpath)
        is_same = record is not None and record.matches(found.size, found.mtime_ns) and (
            record.label == found.label
        )
        needs_hash = hash_files and record is not None and record.sha256 is None and (
            record.state is FileState.PENDING
        )
        if is_same and not needs_hash:
            report.unchanged += 1
            continue
        if record is None:
            report.new += 1
        elif not is_same:
            report.changed += 1
        note_found_file(store, audio_dir, found, limits, hash_files)
    missing = [record.path for record in store.files() if record.path not in seen]
    if missing:
        report.removed = store.forget_files(missing)
        for path in missing:
            logger.info("removed %s from the corpus (file deleted)", shown(path))
    return report


def refresh_path(store: EmbeddingStore, audio_dir: Path, path: Path, limits: IngestLimits) -> bool:
    """Bring the index in line for one path an event named; True if the index changed."""
    try:
        relpath, name_problem = index_path(path, audio_dir)
    except ValueError:
        return False
    if any(is_ignored_name(part) for part in relpath.split("/")) or not is_audio_name(path.name, limits.extensions):
        return False
    found = describe_entry(path, relpath, name_problem)
    record = store.file_record(relpath)
    if found is None:
        if record is not None:
            store.forget_files([relpath])
            logger.info("removed %s from the corpus (file deleted)", shown(relpath))
        return record is not None
    if record is not None and record.matches(found.size, found.mtime_ns) and record.label == found.label:
        return False
    note_found_file(store, audio_dir, found, limits, hash_file=False)
    return True


def note_found_file(
    store: EmbeddingStore, audio_dir: Path, found: FoundFile, limits: IngestLimits, hash_file: bool
) -> None:
    """Index one new or changed file as pending (or failed, or already embedded)."""
    problem = found.problem or size_problem(found.size, limits.max_file_bytes)
    sha256 = None
    if problem is None and hash_file:
        try:
            sha256 = sha256_of(audio_dir / found.relpath)
        except OSError as exc:
            problem = f"cannot read file ({exc.strerror or exc})"
    if problem is not None:
        _record_failure(store, found, None, problem)
        return
    store.note_file(found.relpath, found.label, found.size, found.mtime_ns, sha256)


def size_problem(size: int, max_file_bytes: int) -> str | None:
    if size > max_file_bytes:
        return f"larger than max_file_mb ({max_file_bytes / 1e6:g} MB): {size / 1e6:.1f} MB"
    return None


@dataclass
class EmbedReport:
    embedded: int = 0
    failed: int = 0
    skipped: int = 0  # bytes already cached (a rename, a copy, or a re-run)
    deferred: int = 0  # changed while being read; still pending
    patches: int = 0
    seconds: float = 0.0
    failures: list[tuple[str, str]] = field(default_factory=list)


@dataclass(frozen=True)
class PreparedFile:
    """What the worker thread learned about one pending file."""

    record: FileRecord
    found: FoundFile | None = None  # None: the file is gone
    sha256: str | None = None
    audio: DecodedAudio | None = None
    problem: str | None = None
    changed_while_reading: bool = False


def prepare_file(
    audio_dir: Path, record: FileRecord, limits: IngestLimits, cached: set[str]
) -> PreparedFile:
    """Read, hash and (unless cached) decode one file: everything but the model and the database."""
    path = audio_dir / record.path
    found = describe_entry(path, record.path)
    if found is None:
        return PreparedFile(record)
    problem = found.problem or size_problem(found.size, limits.max_file_bytes)
    if problem:
        return PreparedFile(record, found, problem=problem)
    try:
        data = read_regular_file(path)
    except FileNotFoundError:
        return PreparedFile(record)
    except OSError as exc:
        return PreparedFile(record, found, problem=f"cannot read file ({exc.strerror or exc})")
    after = describe_entry(path, record.path)
    if after is None or (after.size, after.mtime_ns) != (found.size, found.mtime_ns) or (
        len(data) != found.size
    ):
        return PreparedFile(record, after, changed_while_reading=True)
    sha256 = hashlib.sha256(data).hexdigest()
    if sha256 in cached:
        return PreparedFile(record, found, sha256)
    try:
        audio = decode_audio(data, limits.max_duration_s, limits.min_duration_s, limits.min_peak_dbfs)
    except AudioDecodeError as exc:
        return PreparedFile(record, found, sha256, problem=str(exc))
    return PreparedFile(record, found, sha256, audio)


def read_regular_file(path: Path) -> bytes:
    """Read a file's bytes without blocking on a FIFO swapped in after the lstat."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0))
    with os.fdopen(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
            raise OSError(0, "not a regular file")
        return handle.read()


def embed_waveform(embedder: Embedder, waveform: np.ndarray) -> tuple[np.ndarray | None, str | None]:
    """Per-patch embeddings of one clip, or the reason there are none."""
    try:
        embeddings = embedder.embed(waveform)
    except Exception as exc:  # a model error on one file must not stop the others
        logger.exception("the embedding model failed")
        return None, f"embedding model failed ({type(exc).__name__})"
    if not np.isfinite(embeddings).all():
        return None, "embedding model returned NaN or Inf"
    return embeddings, None


@dataclass(frozen=True)
class EmbeddedFile:
    """The embed step's result for one work unit, before anything is written."""

    prepared: PreparedFile
    embeddings: np.ndarray | None = None
    problem: str | None = None
    seconds: float = 0.0
    duration_s: float = 0.0  # of the decoded clip


def embed_work_unit(
    audio_dir: Path, record: FileRecord, limits: IngestLimits, embedder: Embedder, cached: set[str]
) -> EmbeddedFile:
    """The pure embed step, shared by the daemon and the Ray engine: a pending file in,
    its hash and embeddings (or a reason) out; no database involved."""
    return embed_prepared(embedder, prepare_file(audio_dir, record, limits, cached))


def embed_prepared(embedder: Embedder, prepared: PreparedFile) -> EmbeddedFile:
    if prepared.audio is None:
        return EmbeddedFile(prepared)
    started = time.monotonic()
    embeddings, problem = embed_waveform(embedder, prepared.audio.waveform)
    return EmbeddedFile(prepared, embeddings, problem, time.monotonic() - started, prepared.audio.duration_s)


def embed_pending(
    store: EmbeddingStore,
    embedder: Embedder,
    audio_dir: Path,
    limits: IngestLimits,
    progress: Progress | None = None,
    should_stop: Callable[[], bool] = lambda: False,
    limit: int | None = None,
    time_budget_s: float | None = None,
) -> EmbedReport:
    """Embed pending files (at most `limit`, and no new one once `time_budget_s` is spent),
    one committed transaction each; bad files become failed."""
    started = time.monotonic()
    report = EmbedReport()
    pending = store.files(FileState.PENDING, limit)
    cached = store.cached_hashes()
    total = len(pending)
    prepared_files = prefetched(lambda r: prepare_file(audio_dir, r, limits, cached), pending)
    for done, prepared in enumerate(prepared_files, start=1):
        record_result(store, embed_prepared(embedder, prepared), report)
        if progress:
            progress(done, total)
        if should_stop():
            logger.info("stopping after %d of %d pending files", done, total)
            break
        if time_budget_s is not None and time.monotonic() - started >= time_budget_s:
            break
    report.seconds = time.monotonic() - started
    return report


def record_result(store: EmbeddingStore, result: EmbeddedFile, report: EmbedReport) -> None:
    """Write one embed step's result: embedded, already cached, failed, deferred or gone."""
    prepared = result.prepared
    record, found = prepared.record, prepared.found
    if found is None:
        store.forget_files([record.path])
        logger.info("removed %s from the corpus (file deleted)", shown(record.path))
        return
    if prepared.changed_while_reading:
        report.deferred += 1
        logger.info("deferred %s: it changed while being read (still being written?)", shown(record.path))
        return
    problem = prepared.problem or result.problem
    if problem is not None:
        _record_failure(store, found, prepared.sha256, problem, report)
        return
    assert prepared.sha256 is not None  # set whenever there is no problem
    if store.has_embedding(prepared.sha256):
        store.note_file(found.relpath, found.label, found.size, found.mtime_ns, prepared.sha256)
        report.skipped += 1
        logger.debug("cached %s (same bytes embedded before)", shown(found.relpath))
        return
    if result.embeddings is None:
        # Cached when the worker looked, gone from the cache since: embed it next pass.
        report.deferred += 1
        return
    pause.point("embedding")
    store.record_embedding(found.relpath, found.label, found.size, found.mtime_ns, prepared.sha256,
                           result.embeddings, result.duration_s)
    report.embedded += 1
    report.patches += result.embeddings.shape[0]
    logger.info("embedded %s (%d patches, %.1f s of audio) in %.2f s", shown(found.relpath),
                result.embeddings.shape[0], result.duration_s, result.seconds)


def _record_failure(
    store: EmbeddingStore,
    found: FoundFile,
    sha256: str | None,
    reason: str,
    report: EmbedReport | None = None,
) -> None:
    store.record_failure(found.relpath, found.label, found.size, found.mtime_ns, sha256, reason)
    logger.warning("failed %s: %s", shown(found.relpath), reason)
    if report is not None:
        report.failed += 1
        report.failures.append((found.relpath, reason))


T = TypeVar("T")
R = TypeVar("R")


def prefetched(work: Callable[[T], R], items: Iterable[T], depth: int = 2) -> Iterator[R]:
    """Yield work(item) in order, computing up to `depth` items ahead on one worker thread."""
    source = iter(items)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="ecosight-prefetch") as pool:
        queue: deque[Future[R]] = deque(pool.submit(work, item) for _, item in zip(range(depth), source))
        try:
            while queue:
                result = queue.popleft().result()
                upcoming = next(source, None)
                if upcoming is not None:
                    queue.append(pool.submit(work, upcoming))
                yield result
        finally:
            for future in queue:
                future.cancel()
