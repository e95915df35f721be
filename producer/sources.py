"""Frame sources: where images come from before they are published.

Each source yields SourceFrame(image bytes, content type, origin). ``origin``
traces a score back to its image: a path relative to the folder given, or
``URI#frame-number`` for a stream.
"""

from __future__ import annotations

import abc
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from wire.errors import FramewatchError

IMAGE_TYPES = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png"}


class SourceError(FramewatchError):
    """A frame source cannot be opened or read."""


@dataclass(frozen=True)
class SourceFrame:
    image: bytes = field(repr=False)
    content_type: str
    origin: str


class FrameSource(abc.ABC):
    """Yields frames until exhausted (or forever for live streams / ``loop``)."""

    @abc.abstractmethod
    def frames(self) -> Iterator[SourceFrame]: ...

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release the device or file."""


class FolderSource(FrameSource):
    """Every JPEG and PNG under ``root`` (recursively), in sorted path order."""

    def __init__(self, root: str | os.PathLike[str], loop: bool = False) -> None:
        self.root = Path(root)
        self.loop = loop
        if not self.root.is_dir():
            raise SourceError(f"{self.root} is not a directory")

    def paths(self) -> list[Path]:
        return sorted(p for p in self.root.rglob("*") if p.suffix.lower() in IMAGE_TYPES and p.is_file())

    def frames(self) -> Iterator[SourceFrame]:
        paths = self.paths()
        if not paths:
            raise SourceError(f"no .jpg/.jpeg/.png files under {self.root}")
        while True:
            for path in paths:
                yield SourceFrame(
                    image=path.read_bytes(),
                    content_type=IMAGE_TYPES[path.suffix.lower()],
                    origin=path.relative_to(self.root).as_posix(),
                )
            if not self.loop:
                return


class VideoSource(FrameSource):
    """A video file, camera index or RTSP/HTTP URI, decoded with OpenCV and re-encoded as JPEG.

    Needs ``pip install opencv-python-headless`` (not a core dependency).
    ``every`` keeps one frame in N (cameras often run faster than scoring needs).
    """

    def __init__(self, uri: str, every: int = 1, jpeg_quality: int = 90, loop: bool = False) -> None:
        self.uri = uri
        self.every = max(1, every)
        self.jpeg_quality = jpeg_quality
        self.loop = loop
        self._cap = None

    def _open(self):  # type: ignore[no-untyped-def]
        try:
            import cv2
        except ImportError as e:
            raise SourceError(
                "video and camera sources need OpenCV: pip install opencv-python-headless"
            ) from e
        target: int | str = int(self.uri) if self.uri.isdigit() else self.uri
        cap = cv2.VideoCapture(target)
        if not cap.isOpened():
            raise SourceError(f"cannot open video source {self.uri}")
        return cv2, cap

    def frames(self) -> Iterator[SourceFrame]:
        cv2, cap = self._open()
        self._cap = cap
        try:
            number = 0
            while True:
                ok, frame = cap.read()
                if not ok:
                    if self.loop and not self.uri.isdigit():
                        cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
                        continue
                    return
                if number % self.every == 0:
                    ok, buf = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, self.jpeg_quality])
                    if ok:
                        yield SourceFrame(buf.tobytes(), "image/jpeg", f"{self.uri}#{number}")
                number += 1
        finally:
            cap.release()

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()


def open_source(spec: str, loop: bool = False, every: int = 1) -> FrameSource:
    """A folder path -> FolderSource; anything else (file, device number, URI) -> VideoSource."""
    if os.path.isdir(spec):
        return FolderSource(spec, loop=loop)
    return VideoSource(spec, every=every, loop=loop)
