"""The front end one chunk ahead: while the caller scores a chunk (the AudioSet layer, the
shot CNN, the context trees, its events), a worker thread already runs the
next chunk through the log-mel front end and YAMNet. YAMNet's two ONNX Runtime threads leave
gaps a second stream of work fills: in one process, an hour with the CNN and trees shipping
took 4.5-4.9 s one chunk after another and 4.0-4.2 s overlapped, YAMNet alone 3.8-4.0 s.

The chunks are fed in order on the one worker, so the front end's state (the frames carried
from chunk to chunk) is exactly that of feeding them one by one. At most two chunks' outputs
are held at once; an error in the front end is raised to the caller with the chunk it hit.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np

from ecosight_daemon.detection.chunk_front_end import ChunkFrontEnd
from ecosight_daemon.detection.stream import Chunk

FrontEndOutput = tuple[np.ndarray, np.ndarray, np.ndarray]  # embeddings, onsets, CNN inputs (ChunkFrontEnd.feed)


def front_end_ahead(chunks: Iterable[Chunk | None], front_end: ChunkFrontEnd) -> Iterator[tuple[Chunk, FrontEndOutput]]:
    """Each chunk with its front end's output, in order; the next chunk's front end runs meanwhile.
    Nones (the stream waiting for its reader) are skipped."""
    with ThreadPoolExecutor(1, thread_name_prefix="ecosight-front-end") as worker:
        pending: tuple[Chunk, Future[FrontEndOutput]] | None = None
        try:
            for chunk in chunks:
                if chunk is None:
                    continue
                ahead = worker.submit(front_end.feed, chunk.waveform)
                if pending is not None:
                    yield pending[0], pending[1].result()
                pending = chunk, ahead
            if pending is not None:
                yield pending[0], pending[1].result()
        finally:
            if pending is not None:
                pending[1].cancel()  # a caller that stopped early waits for one chunk at most
