"""Dataset sources: each turns one on-disk dataset layout into :class:`~cxr.data.records.StudyRecord`s."""

from cxr.data.sources.base import DatasetSource
from cxr.data.sources.csv_manifest import CsvManifestSource

__all__ = ["DatasetSource", "CsvManifestSource"]
