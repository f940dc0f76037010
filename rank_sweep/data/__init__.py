"""Video datasets (UCF-101, Kinetics-400, folder) decoded with PyAV, plus synthetic sets."""

from rank_sweep.data.dataset import VideoClipDataset, build_dataset
from rank_sweep.data.errors import DataError

__all__ = ["DataError", "VideoClipDataset", "build_dataset"]
