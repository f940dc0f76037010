"""Video files through PyAV: probe, decode selected frames (optionally resized), write.

PyAV is the only decoder, so synthetic data, UCF-101 and Kinetics all go through the same
path. Frame indices count decoded frames from the start of the stream; decoding is
sequential and stops at the last index needed (clips are short and near the start in the
eval protocol; a random training start costs at most one video's worth of decoding).
"""

from __future__ import annotations

import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from fractions import Fraction
from functools import cache
from pathlib import Path
from typing import Optional

import av
import numpy as np

from rank_sweep.data.errors import DataError

log = logging.getLogger(__name__)

VIDEO_SUFFIXES = (".mp4", ".mov", ".webm", ".avi", ".mkv")


@dataclass(frozen=True)
class VideoInfo:
    frames: int  # decodable frames (counted by demuxing, not trusted from the header)
    fps: float
    width: int
    height: int
    codec: str

    def to_dict(self) -> dict:
        return asdict(self)


def _short_error(exc: BaseException) -> str:
    # FFmpeg errors repeat the path in str(); strerror alone says what went wrong.
    msg = getattr(exc, "strerror", None) or (str(exc).splitlines()[0] if str(exc) else "")
    return f"{type(exc).__name__}: {msg}"[:200]


def probe(path: Path | str) -> VideoInfo:
    """Open, demux every packet and decode the first frame; raise DataError(reason) if unusable.

    The header's frame count is compared with the packets actually present, which is how a
    truncated file whose header survived is told apart from a good one.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise DataError(f"missing file: {_short_error(exc)}") from exc
    if size == 0:
        raise DataError("zero-byte file")
    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, OSError, EOFError) as exc:
        raise DataError(f"unreadable container: {_short_error(exc)}") from exc
    with container:
        if not container.streams.video:
            raise DataError("no video stream")
        stream = container.streams.video[0]
        codec = stream.codec_context.name
        declared = int(stream.frames or 0)
        packets = 0
        first_ok = False
        try:
            for packet in container.demux(stream):
                if packet.size == 0:
                    continue  # flush packet at EOF, not a frame
                packets += 1
                if not first_ok:
                    first_ok = len(packet.decode()) > 0 or first_ok
        except av.error.FFmpegError as exc:
            if packets == 0:
                raise DataError(f"codec {codec!r} cannot be decoded: {_short_error(exc)}") from exc
            raise DataError(
                f"truncated or corrupt after {packets} packets: {_short_error(exc)}"
            ) from exc
        if not first_ok:
            try:
                first_ok = len(stream.codec_context.decode(None)) > 0
            except av.error.FFmpegError as exc:
                raise DataError(f"codec {codec!r} cannot be decoded: {_short_error(exc)}") from exc
        if packets == 0 or not first_ok:
            raise DataError(f"no decodable frames (codec {codec!r})")
        if declared and packets < declared:
            raise DataError(f"truncated: header declares {declared} frames, {packets} present")
        rate = stream.average_rate or stream.guessed_rate
        if rate:
            fps = float(rate)
        elif stream.duration and stream.time_base:
            fps = packets / float(stream.duration * stream.time_base)
        else:
            raise DataError("unknown frame rate")
        return VideoInfo(
            frames=packets,
            fps=fps,
            width=int(stream.codec_context.width),
            height=int(stream.codec_context.height),
            codec=codec,
        )


def resize_plan(src_h: int, src_w: int, height: int, width: int) -> tuple[int, int, int, int]:
    """Short-side resize that covers (height, width), then a center crop.

    Returns (scaled_h, scaled_w, top, left). Pure function so the geometry is testable.
    """
    scale = max(height / src_h, width / src_w)
    sh = max(height, round(src_h * scale))
    sw = max(width, round(src_w * scale))
    return sh, sw, (sh - height) // 2, (sw - width) // 2


def read_frames(
    path: Path | str,
    indices: Optional[Sequence[int]] = None,
    *,
    size: Optional[tuple[int, int]] = None,
) -> np.ndarray:
    """Decode frames as uint8 [T,H,W,3] RGB, in the order of `indices` (repeats allowed).

    indices None = every frame. size=(H, W) applies short-side resize + center crop in
    swscale (faster than resizing full frames in numpy). Raises DataError if the file
    ends before the largest index or fails to decode.
    """
    path = Path(path)
    wanted = None if indices is None else sorted(set(int(i) for i in indices))
    if wanted is not None and (not wanted or wanted[0] < 0):
        raise DataError(
            f"frame indices must be non-negative and non-empty, got {list(indices)[:8]}"
        )
    last = None if wanted is None else wanted[-1]
    want_set = None if wanted is None else set(wanted)
    got: dict[int, np.ndarray] = {}
    order: list[np.ndarray] = []
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            plan = None
            for i, frame in enumerate(container.decode(stream)):
                if last is not None and i > last:
                    break
                if want_set is not None and i not in want_set:
                    continue
                if size is not None:
                    if plan is None:
                        plan = resize_plan(frame.height, frame.width, *size)
                    sh, sw, top, left = plan
                    arr = frame.to_ndarray(
                        width=sw, height=sh, format="rgb24", interpolation="AREA"
                    )
                    arr = arr[top : top + size[0], left : left + size[1]]
                else:
                    arr = frame.to_ndarray(format="rgb24")
                if wanted is None:
                    order.append(arr)
                else:
                    got[i] = arr
    except (av.error.FFmpegError, OSError, EOFError, IndexError) as exc:
        raise DataError(f"decode failed for {path}: {_short_error(exc)}") from exc
    if wanted is None:
        if not order:
            raise DataError(f"no frames decoded from {path}")
        return np.stack(order)
    if len(got) < len(wanted):
        raise DataError(
            f"{path} ended after {len(got)} of the {len(wanted)} frames needed (max index {last})"
        )
    return np.stack([got[int(i)] for i in indices])  # type: ignore[union-attr]


class DecodeCache:
    """Clips this process decoded, most recent kept up to `budget_bytes`. The jobs of a
    multirun share one process and every job's evaluator reads the same eval clips (first
    frames for CLIP-SIM, references for LPIPS): from the second job on they are not decoded
    again. A key holds the file's size and mtime, so a rewritten file is decoded afresh;
    callers get copies, so an item changed in place never changes the cache. A working set
    above the budget (research-scale eval sets) simply misses, as without a cache."""

    def __init__(self, budget_bytes: int) -> None:
        self.budget = int(budget_bytes)
        self._items: OrderedDict[tuple, np.ndarray] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    def read(
        self, path: Path | str, indices: Sequence[int], size: Optional[tuple[int, int]]
    ) -> np.ndarray:
        try:
            st = os.stat(path)
        except OSError:  # gone since the scan: read_frames raises its DataError (skip + count)
            return read_frames(path, indices, size=size)
        key = (str(path), st.st_size, st.st_mtime_ns, tuple(int(i) for i in indices), size)
        with self._lock:
            arr = self._items.get(key)
            if arr is not None:
                self._items.move_to_end(key)
                self.hits += 1
                return arr.copy()
            self.misses += 1
        arr = read_frames(path, indices, size=size)
        if arr.nbytes <= self.budget:
            with self._lock:
                if key not in self._items:
                    self._items[key] = arr.copy()
                    self._bytes += arr.nbytes
                while self._bytes > self.budget:
                    _, old = self._items.popitem(last=False)
                    self._bytes -= old.nbytes
        return arr


# 256 MiB: the demo's 96 eval clips are 5 MiB; a 2048-clip 224 px eval set (~5 GiB) misses.
DECODED_CLIPS = DecodeCache(256 << 20)


@cache
def encoder_available(name: str) -> bool:
    try:
        av.codec.Codec(name, "w")
    except (av.error.FFmpegError, ValueError):
        return False
    return True


def h264_encoder() -> Optional[str]:
    """The first usable H.264 encoder in this PyAV build, or None."""
    for name in ("libx264", "libopenh264", "h264"):
        if encoder_available(name):
            return name
    return None


def codec_for_suffix(suffix: str) -> str:
    suffix = suffix.lower()
    if suffix == ".avi":
        return "mpeg4"  # UCF-101 is MPEG-4 Part 2 (xvid) in AVI
    if suffix == ".webm":
        return "libvpx-vp9" if encoder_available("libvpx-vp9") else "libvpx"
    if suffix in (".mp4", ".mov", ".mkv"):
        return h264_encoder() or "mpeg4"
    raise DataError(
        f"cannot write video with suffix {suffix!r}; allowed: {', '.join(VIDEO_SUFFIXES)}"
    )


def _encoder_options(codec: str) -> dict[str, str]:
    if codec == "libx264":
        # crf 18 is visually lossless at these sizes.
        return {"crf": "18", "preset": "veryfast"}
    if codec.startswith("libvpx"):
        return {"crf": "20", "b": "0", "deadline": "realtime", "cpu-used": "8"}
    return {}


def write_video(
    path: Path | str, frames: np.ndarray, fps: float, codec: Optional[str] = None
) -> Path:
    """Write uint8 [T,H,W,3] RGB frames; the codec follows the suffix unless given."""
    path = Path(path)
    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3 or len(frames) == 0:
        raise DataError(
            f"write_video needs uint8 [T,H,W,3] with T>0, got {frames.dtype} {list(frames.shape)}"
        )
    t, h, w, _ = frames.shape
    if h % 2 or w % 2:
        raise DataError(f"write_video needs even height and width for yuv420p, got {h}x{w}")
    if not fps > 0:
        raise DataError(f"write_video fps must be > 0, got {fps}")
    codec = codec or codec_for_suffix(path.suffix)
    path.parent.mkdir(parents=True, exist_ok=True)
    rate = Fraction(fps).limit_denominator(1001)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=rate)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        if codec == "mpeg4":
            # ~2 bits/pixel: default mpeg4 bitrate smears small synthetic frames.
            stream.bit_rate = max(500_000, int(2 * w * h * fps))
        stream.options = _encoder_options(codec)
        for i, arr in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(arr), format="rgb24")
            # Explicit timestamps rather than the muxer's guesses.
            frame.pts, frame.time_base = i, 1 / rate
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path
