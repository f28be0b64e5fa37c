"""Episode videos (mp4 via PyAV), named so that nothing is ever overwritten."""
from __future__ import annotations

import os
import re
from fractions import Fraction
from pathlib import Path
from typing import Sequence

import numpy as np

from vla.io import atomic_write

VIDEO_MODES = ("none", "failures", "all")
FPS = 20  # LIBERO's control frequency: one frame per step plays in real time


def video_name(suite: str, task_id: int, trial: int, outcome: str, task: str = "") -> str:
    slug = re.sub(r"[^a-z0-9]+", "_", task.lower()).strip("_")[:60]
    return f"{suite}__task{task_id:02d}__trial{trial:03d}__{outcome}{'__' + slug if slug else ''}.mp4"


def write_mp4(path: str | os.PathLike, frames: Sequence[np.ndarray], fps: int = FPS) -> Path:
    """Encode RGB uint8 frames to `path` (temp file + rename: a kill leaves no half video)."""
    import av

    path = Path(path)
    if not frames:
        raise ValueError(f"no frames to write to {path}")
    path.parent.mkdir(parents=True, exist_ok=True)
    h, w = frames[0].shape[:2]
    h2, w2 = h - h % 2, w - w % 2  # yuv420p needs even sides
    codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"

    def encode(tmp: str) -> None:
        with av.open(tmp, mode="w", format="mp4") as container:
            stream = container.add_stream(codec, rate=Fraction(fps))
            stream.width, stream.height, stream.pix_fmt = w2, h2, "yuv420p"
            if codec == "libx264":
                stream.options = {"crf": "23", "preset": "veryfast"}
            for frame in frames:
                vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame[:h2, :w2]), format="rgb24")
                for packet in stream.encode(vf):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)

    atomic_write(path, encode)
    return path
