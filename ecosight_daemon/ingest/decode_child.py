"""The decoder process's side of isolated_decode.py, run as
`python -m ecosight_daemon.ingest.decode_child <parent pid>`.

A request is the file's bytes with its limits ({"max_duration_s": ..., "min_duration_s":
..., "min_peak_dbfs": ...}); an answer is {"error": reason}, or {"rate": ..., "channels":
...} and the 16 kHz samples as float32 (util/child_channel.py frames both).
"""

from __future__ import annotations

import sys
from typing import Any

from ecosight_daemon.audio import decode_audio
from ecosight_daemon.errors import AudioDecodeError
from ecosight_daemon.util import pause
from ecosight_daemon.util.child_channel import Answer, die_with_parent, serve


def decode(request: dict[str, Any], data: bytes) -> Answer:
    pause.point("decoding")
    try:
        audio = decode_audio(data, request["max_duration_s"], request["min_duration_s"], request["min_peak_dbfs"])
    except AudioDecodeError as exc:
        return {"error": str(exc)}, b""
    return {"rate": audio.source_sample_rate, "channels": audio.source_channels}, audio.waveform.tobytes()


if __name__ == "__main__":
    die_with_parent(int(sys.argv[1]))
    serve(decode, sys.stdin.buffer, sys.stdout.buffer)
