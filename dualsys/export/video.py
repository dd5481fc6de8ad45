"""mp4 files through PyAV: frames (H, W, 3) uint8 at a fixed rate in, and back out."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np

#: Codecs tried in order: H.264, then MPEG-4 part 2 (LeRobot's loaders decode both; its own
#: default, AV1 through libsvtav1, is left out on purpose: run as root, SVT-AV1 puts the
#: calling thread and its encoder threads on SCHED_FIFO 99, above a robot's control loop).
CODECS = (("libx264", "h264"), ("mpeg4", "mpeg4"))


class VideoWriter:
    """Appends frames to one mp4 at `fps` (yuv420p, every frame a key frame every `gop`)."""

    def __init__(self, path: Path, width: int, height: int, fps: int, gop: int = 2) -> None:
        import av

        path.parent.mkdir(parents=True, exist_ok=True)
        self.container = av.open(str(path), mode="w")
        last: Exception | None = None
        for encoder, name in CODECS:
            try:
                stream = self.container.add_stream(encoder, rate=fps)
            except Exception as exc:  # this PyAV build lacks the encoder: try the next one
                last = exc
                continue
            self.codec = name
            break
        else:
            raise RuntimeError(f"no mp4 video encoder in this PyAV build: {last}")
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.gop_size = gop
        self.stream, self.frames = stream, 0

    def add(self, image: np.ndarray) -> None:
        """One RGB frame."""
        import av

        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
        frame.pts = self.frames
        self.frames += 1
        with _normal_scheduling():
            for packet in self.stream.encode(frame):
                self.container.mux(packet)

    def close(self) -> None:
        """Flush the encoder and close the file."""
        with _normal_scheduling():
            for packet in self.stream.encode():
                self.container.mux(packet)
            self.container.close()


@contextlib.contextmanager
def _normal_scheduling() -> Iterator[None]:
    """Whatever a codec library does to this thread's scheduling, leave it as it was."""
    policy, param = os.sched_getscheduler(0), os.sched_getparam(0)
    try:
        yield
    finally:
        if os.sched_getscheduler(0) != policy:
            with contextlib.suppress(OSError):
                os.sched_setscheduler(0, policy, param)


def read_frames(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Every frame of an mp4 as (N, H, W, 3) uint8 and its presentation times (s)."""
    import av

    frames, times = [], []
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            frames.append(frame.to_ndarray(format="rgb24"))
            times.append(float(frame.time))
    if not frames:
        return np.zeros((0, 0, 0, 3), np.uint8), np.zeros(0)
    return np.stack(frames), np.array(times)
