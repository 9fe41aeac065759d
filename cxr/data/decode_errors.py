"""Image decode error types: a leaf module shared by :mod:`cxr.data.images` and :mod:`cxr.data.dicom`.

Kept apart so that ``images`` (the entry point, which dispatches DICOM files to ``dicom``) and ``dicom`` (which
raises these errors) do not import each other.
"""

from __future__ import annotations

import os
from enum import Enum


class DecodeDefect(str, Enum):
    """What was wrong with an image file (closed set, for counting skips and for tests)."""

    MISSING = "missing"
    NOT_DICOM = "not_dicom"
    UNREADABLE = "unreadable"
    NO_PIXEL_DATA = "no_pixel_data"
    COLOR = "color"
    UNSUPPORTED_SYNTAX = "unsupported_syntax"
    MISSING_PLUGIN = "missing_plugin"
    TRUNCATED = "truncated"
    UNDECODABLE = "undecodable"
    BAD_FRAME = "bad_frame"
    CONSTANT = "constant"
    NO_VOI = "no_voi"
    BAD_VOI = "bad_voi"
    UNSUPPORTED_FORMAT = "unsupported_format"
    NOT_A_FILE = "not_a_file"  # a directory (or other non-file) where an image file should be
    EMPTY_FILE = "empty_file"  # 0 bytes: an interrupted download or copy
    BAD_BITS = "bad_bits"  # BitsStored contradicts the pixel data (decoding would throw most grey levels away)


class ImageDecodeError(ValueError):
    """An image file that cannot be turned into pixels; ``path`` and ``defect`` say which and why."""

    def __init__(self, path: str | os.PathLike[str], defect: DecodeDefect, reason: str) -> None:
        self.path = str(path)
        self.defect = DecodeDefect(defect)
        self.reason = reason
        super().__init__(f"{self.path}: {self.defect.value}: {reason}")

    def __reduce__(self):  # keep the typed fields across multiprocessing pickling
        return (type(self), (self.path, self.defect, self.reason))
