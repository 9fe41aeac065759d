"""The synthetic CXR world: deterministic studies written in the on-disk layouts of the real datasets.

``write_synthetic_dataset(out_dir, layout, num_studies, seed=0, image_size=256, **options)`` samples a world
(:mod:`.world`), renders phantoms (:mod:`.phantom`), writes the layout's files (:mod:`.layouts`) and the
ground truth ``<out_dir>/synthetic_truth.jsonl`` (:mod:`.truth`). Command line: ``python -m cxr.data.synthetic``.

Options: ``split_fractions`` (a :class:`SplitFractions` or a (train, val, test) tuple),
``hospital_fraction`` (share of terse impression-only reports, default 0.15), ``report_styles`` (``legacy``, the
default, or ``realistic``: the nine real-report styles of :mod:`.realistic`, every sentence with its facts),
``gzip`` (MIMIC layouts, default True) and ``png16_fraction`` (CheXpert-Plus, default 0.2). A text-only corpus of
realistic reports (no images): ``python -m cxr.data.synthetic.corpus`` (:mod:`.corpus`).
"""

from __future__ import annotations

from pathlib import Path

from cxr.data.synthetic.layouts import Layout
from cxr.data.synthetic.truth import TruthRecord, TruthView, load_synthetic_truth, write_truth
from cxr.data.synthetic.world import (
    ReportStyleMix,
    SplitFractions,
    SyntheticStudy,
    SyntheticView,
    sample_world,
)

__all__ = ["Layout", "ReportStyleMix", "SplitFractions", "SyntheticStudy", "SyntheticView", "TruthRecord",
           "TruthView", "load_synthetic_truth", "sample_world", "write_synthetic_dataset"]


def write_synthetic_dataset(out_dir: str | Path, layout: Layout | str, num_studies: int, seed: int = 0,
                            image_size: int = 256, *,
                            split_fractions: SplitFractions | tuple[float, float, float] | None = None,
                            hospital_fraction: float = 0.15, gzip: bool = True,
                            png16_fraction: float = 0.2,
                            report_styles: ReportStyleMix | str = ReportStyleMix.LEGACY) -> list[SyntheticStudy]:
    """Write ``num_studies`` synthetic studies to ``out_dir`` in ``layout``; returns the sampled studies.

    The same arguments always give byte-identical files. Layout-specific options that do not apply to
    ``layout`` are rejected, so a typo cannot silently change nothing.
    """
    layout = Layout(layout)
    if layout not in (Layout.MIMIC_CXR_JPG, Layout.MIMIC_CXR_DICOM) and gzip is not True:
        raise ValueError(f"option gzip applies only to the MIMIC layouts, not {layout.value!r}")
    if layout is not Layout.CHEXPERT_PLUS and png16_fraction != 0.2:
        raise ValueError(f"option png16_fraction applies only to chexpert-plus, not {layout.value!r}")
    if isinstance(split_fractions, (tuple, list)):
        split_fractions = SplitFractions(*split_fractions)
    studies = sample_world(num_studies, seed=seed, split_fractions=split_fractions,
                           hospital_fraction=hospital_fraction, report_styles=report_styles)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if layout is Layout.CSV:
        from cxr.data.synthetic.layouts.csv_manifest import write_csv_layout
        truth = write_csv_layout(out, studies, image_size)
    elif layout is Layout.MIMIC_CXR_JPG:
        from cxr.data.synthetic.layouts.mimic_jpg import write_mimic_jpg_layout
        truth = write_mimic_jpg_layout(out, studies, image_size, gzip=gzip)
    elif layout is Layout.MIMIC_CXR_DICOM:
        from cxr.data.synthetic.layouts.mimic_dicom import write_mimic_dicom_layout
        truth = write_mimic_dicom_layout(out, studies, image_size, gzip=gzip)
    elif layout is Layout.CHEXPERT_PLUS:
        from cxr.data.synthetic.layouts.chexpert_plus import write_chexpert_plus_layout
        truth = write_chexpert_plus_layout(out, studies, image_size, seed=seed, png16_fraction=png16_fraction)
    elif layout in (Layout.OPENI_XML, Layout.OPENI_XML_DICOM):
        from cxr.data.synthetic.layouts.openi_xml import write_openi_xml_layout
        truth = write_openi_xml_layout(out, studies, image_size, dicom=layout is Layout.OPENI_XML_DICOM)
    elif layout is Layout.IU_XRAY:
        from cxr.data.synthetic.layouts.iu_xray import write_iu_xray_layout
        truth = write_iu_xray_layout(out, studies, image_size)
    else:
        from cxr.data.synthetic.layouts.openi import write_openi_layout
        truth = write_openi_layout(out, studies, image_size)
    write_truth(out, truth)
    return studies
