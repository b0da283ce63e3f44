"""The decoder process's side of isolated_decode.py: read a request from stdin, decode it,
write the answer to stdout, until stdin closes. Run as
`python -m ecosight_daemon.ingest.decode_child <parent pid>`.

A request is one JSON line ({"bytes": n, "max_duration_s": ..., "min_duration_s": ...,
"min_peak_dbfs": ...}) and then n bytes of the file. An answer is one JSON line, either
{"error": reason} or {"samples": k, "rate": ..., "channels": ...} and then k float32 samples
at 16 kHz.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import sys
from typing import BinaryIO

from ecosight_daemon.audio import decode_audio
from ecosight_daemon.errors import AudioDecodeError
from ecosight_daemon.util import pause

PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>
READY = b"ready\n"


def serve(requests: BinaryIO, answers: BinaryIO) -> None:
    answers.write(READY)  # imports done: the parent's budget is for decoding, not for starting Python
    answers.flush()
    while header := requests.readline():
        request = json.loads(header)
        data = requests.read(request["bytes"])
        pause.point("decoding")
        try:
            audio = decode_audio(data, request["max_duration_s"], request["min_duration_s"], request["min_peak_dbfs"])
        except AudioDecodeError as exc:
            answers.write(json.dumps({"error": str(exc)}).encode() + b"\n")
        else:
            reply = {"samples": len(audio.waveform), "rate": audio.source_sample_rate,
                     "channels": audio.source_channels}
            answers.write(json.dumps(reply).encode() + b"\n")
            answers.write(audio.waveform.tobytes())
        answers.flush()


def die_with_parent(parent_pid: int) -> None:
    """Killed with the daemon, even if it is SIGKILLed while this process loops in a decode."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent_pid:  # the parent died before the line above took effect
        os._exit(0)


if __name__ == "__main__":
    die_with_parent(int(sys.argv[1]))
    serve(sys.stdin.buffer, sys.stdout.buffer)
