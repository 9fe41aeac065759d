"""Dataset sources: each turns one on-disk dataset layout into :class:`~cxr.records.StudyRecord`s."""

from cxr.data.sources.base import DatasetSource
from cxr.data.sources.chexpert_plus import ChexpertPlusSource
from cxr.data.sources.csv_manifest import CsvManifestSource
from cxr.data.sources.mimic_cxr import MimicCxrSource
from cxr.data.sources.openi import OpenISource
from cxr.data.sources.openi_xml import OpenIXmlSource
from cxr.data.sources.r2gen import R2GenSource

__all__ = ["DatasetSource", "ChexpertPlusSource", "CsvManifestSource", "MimicCxrSource", "OpenISource",
           "OpenIXmlSource", "R2GenSource"]
