"""The product's name and version, and what it writes into every output to say "this is ours".

Every SR, Secondary Capture and Segmentation the product writes carries its equipment (Manufacturer,
Manufacturer's Model Name, Software Versions), one of the series descriptions below, and, in
captures, the notice marker in Image Comments and Derivation Description. `operators.dicom_input.image_provenance`
uses the same values to recognise earlier outputs when a study comes back, so the two cannot drift
apart.
"""

from __future__ import annotations

APP_NAME = "biomedclip-map"
__version__ = "0.1.0"
VERSION = __version__

MANUFACTURER = f"{APP_NAME} project"
MODEL_NAME = APP_NAME
SOFTWARE_VERSION = __version__

#: Equipment values that mark an output of this product (any version).
OWN_MANUFACTURERS = frozenset({MANUFACTURER})
OWN_MODEL_NAMES = frozenset({MODEL_NAME})

#: Series descriptions of the outputs; the untrained suffix may follow each.
SR_SERIES_DESCRIPTION = "BiomedCLIP zero-shot analysis (AI)"
BURN_CAPTURE_SERIES_DESCRIPTION = "BiomedCLIP burn analysis overlay (AI)"
FINDINGS_CAPTURE_SERIES_DESCRIPTION = "BiomedCLIP findings image (AI)"
BURN_SEGMENTATION_SERIES_DESCRIPTION = "BiomedCLIP burn wound map (AI)"
UNTRAINED_SUFFIX = " UNTRAINED MODEL"
SR_SERIES_DESCRIPTION_UNTRAINED = "BiomedCLIP zero-shot analysis (AI, UNTRAINED MODEL)"
OWN_SERIES_DESCRIPTIONS = frozenset(
    {SR_SERIES_DESCRIPTION, SR_SERIES_DESCRIPTION_UNTRAINED, BURN_CAPTURE_SERIES_DESCRIPTION, FINDINGS_CAPTURE_SERIES_DESCRIPTION,
     BURN_SEGMENTATION_SERIES_DESCRIPTION}
)

#: Text every capture carries in Image Comments and Derivation Description ("Findings drawn by <app>").
OWN_NOTICE_MARKER = f"Findings drawn by {APP_NAME}"


def is_own_series_description(description: str) -> bool:
    """Whether a Series Description is one this product writes (with or without the untrained suffix)."""
    text = description.strip()
    if text.endswith(UNTRAINED_SUFFIX):
        text = text[: -len(UNTRAINED_SUFFIX)]
    return text in OWN_SERIES_DESCRIPTIONS
