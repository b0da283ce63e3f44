"""A few seconds of a recording as the pages play and show them: a WAV or a spectrogram PNG,
cut on demand by seeking (detection/snippets.py)."""

from __future__ import annotations

from pathlib import Path

from fastapi import Response
from fastapi.responses import JSONResponse

from ecosight_daemon.detection import snippets
from ecosight_daemon.detection.recording_reader import ReaderInterrupted
from ecosight_daemon.errors import AudioDecodeError

SNIPPET_NAMES = ("audio.wav", "spectrogram.png")


def snippet_response(path: Path, centre_s: float, name: str) -> Response:
    try:
        samples, rate = snippets.cut(path, centre_s)
    except (TimeoutError, ReaderInterrupted) as exc:
        return JSONResponse({"error": f"{exc}; try again in a moment"}, 503, headers={"Retry-After": "5"})
    except (AudioDecodeError, OSError, RuntimeError, ValueError) as exc:
        return JSONResponse({"error": f"the recording cannot be read now ({exc})"}, 410)
    if name == "audio.wav":
        return Response(snippets.wav_bytes(samples, rate), media_type="audio/wav",
                        headers={"Cache-Control": "max-age=3600"})
    return Response(snippets.spectrogram_png(samples, rate), media_type="image/png",
                    headers={"Cache-Control": "max-age=3600"})
