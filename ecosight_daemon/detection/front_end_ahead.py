"""The front end one chunk ahead: a worker thread runs the next chunk through the log-mel
front end and YAMNet (what the model alone costs) while the caller's thread does the rest for
this one: its onset features and CNN inputs, then its scoring (the AudioSet layer, the shot
CNN, the context trees, events). YAMNet's two ONNX Runtime threads leave gaps that work fills.

The chunks are embedded in order on the one worker, so the front end's state (the frames
carried from chunk to chunk) is exactly that of feeding them one by one. At most two chunks
are held at once; an error in the front end is raised to the caller with the chunk it hit.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np

from ecosight_daemon.detection.chunk_front_end import ChunkFrontEnd, EmbeddedChunk, features_of
from ecosight_daemon.detection.stream import Chunk

FrontEndOutput = tuple[np.ndarray, np.ndarray, np.ndarray]  # embeddings, onsets, CNN inputs (ChunkFrontEnd.feed)


def front_end_ahead(chunks: Iterable[Chunk | None], front_end: ChunkFrontEnd) -> Iterator[tuple[Chunk, FrontEndOutput]]:
    """Each chunk with what ChunkFrontEnd.feed gives for it, in order, the next chunk's
    embedding running meanwhile. Nones (the stream waiting for its reader) are skipped."""
    with ThreadPoolExecutor(1, thread_name_prefix="ecosight-front-end") as worker:
        pending: tuple[Chunk, Future[EmbeddedChunk]] | None = None
        try:
            for chunk in chunks:
                if chunk is None:
                    continue
                ahead = worker.submit(front_end.embed, chunk.waveform)
                if pending is not None:
                    yield pending[0], features_of(pending[1].result())
                pending = chunk, ahead
            if pending is not None:
                yield pending[0], features_of(pending[1].result())
        finally:
            if pending is not None:
                pending[1].cancel()  # a caller that stopped early waits for one chunk at most
