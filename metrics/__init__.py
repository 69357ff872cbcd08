"""Benchmark metrics as torchmetrics, numerically matching the official evaluation protocols.

Pure: imports nothing else from this repository. See SPEC §9 for the conventions.
"""

from metrics.grounding import BoxGroundingAccuracy, IoURecall, TemporalGroundingRecall
from metrics.segmentation import CumulativeIoU, JAndF
from metrics.tracking import AverageOverlap

__all__ = [
    "AverageOverlap",
    "BoxGroundingAccuracy",
    "CumulativeIoU",
    "IoURecall",
    "JAndF",
    "TemporalGroundingRecall",
]
