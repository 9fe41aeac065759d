"""Open-I term → CheXpert map: the added mappings and the terms left unmapped on purpose."""

from __future__ import annotations

import pytest

from cxr.data.sources.openi import TERM_TO_OBSERVATION, UNMAPPED_ON_PURPOSE, labels_from_terms
from cxr.labels import OBSERVATION_INDEX, LabelState


@pytest.mark.parametrize("cell, observation", [
    ("Heart Failure", "Edema"), ("Infection/lung", "Pneumonia"), ("Lung Diseases, Interstitial/diffuse",
                                                                   "Lung Opacity"),
    ("Density/lung/base/left", "Lung Opacity"), ("Cicatrix/lung/apex/right", "Lung Opacity"),
    ("Cardiac Shadow/enlarged/mild", "Cardiomegaly"), ("Mediastinum/widened", "Enlarged Cardiomediastinum"),
    ("Hydropneumothorax/right", "Pneumothorax"),
])
def test_added_terms_map_to_one_observation(cell, observation):
    labels = labels_from_terms([cell])
    assert labels[OBSERVATION_INDEX[observation]] == LabelState.POSITIVE
    assert (labels == LabelState.POSITIVE).sum() == 1


def test_unmapped_terms_stay_not_mentioned():
    assert not UNMAPPED_ON_PURPOSE & set(TERM_TO_OBSERVATION)
    cells = ["Calcified Granuloma/lung/upper lobe/right", "Lung/hypoinflation/mild", "Thoracic Vertebrae/degenerative",
             "Granulomatous Disease", "Emphysema", "Aorta/tortuous", "Costophrenic Angle/left/blunted"]
    assert (labels_from_terms(cells) == LabelState.NOT_MENTIONED).all()
    for cell in cells:
        assert cell.split("/")[0].lower() in UNMAPPED_ON_PURPOSE
