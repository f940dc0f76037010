"""PyAV layer: write -> probe -> decode round trips, resize geometry, codec choice."""

from __future__ import annotations

import numpy as np
import pytest

from rank_sweep.data.errors import DataError
from rank_sweep.data.render import render
from rank_sweep.data.video import (
    DecodeCache,
    codec_for_suffix,
    h264_encoder,
    probe,
    read_frames,
    resize_plan,
    write_video,
)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255.0**2 / max(mse, 1e-12)))


@pytest.fixture(scope="module")
def frames() -> np.ndarray:
    return render(0, np.random.default_rng(0), 12, 48, 64)


@pytest.mark.parametrize("suffix", [".avi", ".mp4", ".mkv", ".mov"])
def test_roundtrip_decodes_the_written_frames(tmp_path, frames, suffix):
    path = write_video(tmp_path / f"clip{suffix}", frames, fps=8)
    info = probe(path)
    assert (info.frames, info.width, info.height) == (12, 64, 48)
    assert info.fps == pytest.approx(8.0)
    assert info.codec == ("mpeg4" if suffix == ".avi" else "h264")
    out = read_frames(path)
    assert out.dtype == np.uint8 and out.shape == frames.shape
    # Lossy codecs: the decoded frames must still be close to what was written.
    assert np.abs(out.astype(int) - frames.astype(int)).mean() < 8
    assert psnr(out, frames) > 28


def test_read_frames_selects_in_order_with_repeats(tmp_path, frames):
    path = write_video(tmp_path / "c.mp4", frames, fps=8)
    full = read_frames(path)
    sel = read_frames(path, [5, 1, 1, 9])
    assert np.array_equal(sel, full[[5, 1, 1, 9]])
    with pytest.raises(DataError, match="ended after"):
        read_frames(path, [0, 12])


def test_decode_cache_hits_copies_and_misses_a_rewritten_file(tmp_path, frames):
    path = write_video(tmp_path / "c.mp4", frames, fps=8)
    cache = DecodeCache(1 << 20)
    first = cache.read(path, [0, 3, 3], (16, 16))
    assert np.array_equal(first, read_frames(path, [0, 3, 3], size=(16, 16)))
    first[:] = 0  # the caller's copy: the cache must not see this
    again = cache.read(path, [0, 3, 3], (16, 16))
    assert (cache.hits, cache.misses) == (1, 1) and np.array_equal(
        again, read_frames(path, [0, 3, 3], size=(16, 16))
    )
    assert cache.read(path, [0, 3], (16, 16)).shape[0] == 2 and cache.misses == 2  # other frames
    other = np.ascontiguousarray(frames[::-1])
    write_video(path, other, fps=8)  # same name, new bytes
    fresh = cache.read(path, [0, 3, 3], (16, 16))
    assert cache.misses == 3 and np.array_equal(fresh, read_frames(path, [0, 3, 3], size=(16, 16)))
    assert not np.array_equal(fresh, again)


def test_decode_cache_stays_within_its_budget(tmp_path, frames):
    path = write_video(tmp_path / "c.mp4", frames, fps=8)
    one = 2 * 16 * 16 * 3  # bytes of a 2-frame 16x16 clip
    cache = DecodeCache(2 * one)
    for start in range(4):
        cache.read(path, [start, start + 1], (16, 16))
    assert cache._bytes <= 2 * one and len(cache._items) == 2  # the two newest kept
    cache.read(path, [3, 4], (16, 16))
    cache.read(path, [0, 1], (16, 16))
    assert (cache.hits, cache.misses) == (1, 5)
    small = DecodeCache(one - 1)
    assert small.read(path, [0, 1], (16, 16)).shape == (2, 16, 16, 3) and not small._items
    with pytest.raises(DataError, match="ended after"):
        cache.read(path, [0, 12], None)
    path.unlink()  # deleted after the dataset's scan: the dataset's DataError, not an OSError
    with pytest.raises(DataError, match="decode failed"):
        cache.read(path, [0, 1], (16, 16))


def test_read_frames_resize_and_center_crop(tmp_path):
    # Left half red, right half blue: a center crop of a wide frame keeps both halves.
    f = np.zeros((4, 48, 96, 3), np.uint8)
    f[:, :, :48, 0] = 255
    f[:, :, 48:, 2] = 255
    path = write_video(tmp_path / "w.mp4", f, fps=8)
    out = read_frames(path, [0], size=(16, 16))
    assert out.shape == (1, 16, 16, 3)
    assert out[0, 8, 2, 0] > 200 and out[0, 8, 13, 2] > 200


@pytest.mark.parametrize(
    "src,dst,want",
    [
        ((240, 320), (224, 224), (224, 299, 0, 37)),  # landscape: height is the short side
        ((320, 240), (224, 224), (299, 224, 37, 0)),
        ((48, 64), (48, 64), (48, 64, 0, 0)),
        ((100, 100), (32, 64), (64, 64, 16, 0)),  # target wider than source aspect
    ],
)
def test_resize_plan(src, dst, want):
    assert resize_plan(*src, *dst) == want


def test_probe_reasons(tmp_path, frames):
    (tmp_path / "z.avi").write_bytes(b"")
    with pytest.raises(DataError, match="zero-byte"):
        probe(tmp_path / "z.avi")
    (tmp_path / "t.avi").write_text("not a video")
    with pytest.raises(DataError, match="unreadable container"):
        probe(tmp_path / "t.avi")
    data = write_video(tmp_path / "g.avi", frames, fps=8).read_bytes()
    (tmp_path / "cut.avi").write_bytes(data[: int(len(data) * 0.9)])
    with pytest.raises(DataError, match="truncated"):
        probe(tmp_path / "cut.avi")
    with pytest.raises(DataError, match="missing file"):
        probe(tmp_path / "nope.avi")


def test_codec_choice_and_write_errors(tmp_path, frames):
    assert codec_for_suffix(".avi") == "mpeg4"
    assert codec_for_suffix(".mp4") == (h264_encoder() or "mpeg4")
    with pytest.raises(DataError, match="suffix '.gif'"):
        codec_for_suffix(".gif")
    with pytest.raises(DataError, match="uint8"):
        write_video(tmp_path / "a.mp4", frames.astype(np.float32), fps=8)
    with pytest.raises(DataError, match="even"):
        write_video(tmp_path / "a.mp4", frames[:, :47], fps=8)
