"""Which SOP classes the node accepts, and which of them the series selector can analyse.

The bundled selection rules pick photographs (XC, DMS, OT colour images, or anything with body part
SKIN), chest radiographs (CR, DX), CT and MR; modality preprocessing also handles MG and US. The
image storage classes that carry those are "analysable". With `dicom.accept_sop_classes:
all-storage` (the default) every other storage class is accepted too, so that a PACS routing a
whole study never sees a refusal; such instances are kept with the study but never analysed, and
they never start a new run of an already processed study on their own.
"""

from __future__ import annotations

from pynetdicom import ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts
from pynetdicom.presentation import PresentationContext, build_context
from pynetdicom.sop_class import (
    ComputedRadiographyImageStorage,
    CTImageStorage,
    DermoscopicPhotographyImageStorage,
    DigitalMammographyXRayImageStorageForPresentation,
    DigitalMammographyXRayImageStorageForProcessing,
    DigitalXRayImageStorageForPresentation,
    DigitalXRayImageStorageForProcessing,
    EnhancedCTImageStorage,
    EnhancedMRColorImageStorage,
    EnhancedMRImageStorage,
    LegacyConvertedEnhancedCTImageStorage,
    LegacyConvertedEnhancedMRImageStorage,
    MRImageStorage,
    MultiFrameGrayscaleByteSecondaryCaptureImageStorage,
    MultiFrameGrayscaleWordSecondaryCaptureImageStorage,
    MultiFrameTrueColorSecondaryCaptureImageStorage,
    SecondaryCaptureImageStorage,
    UltrasoundImageStorage,
    UltrasoundMultiFrameImageStorage,
    Verification,
    VLPhotographicImageStorage,
)

ANALYSABLE_SOP_CLASSES: frozenset[str] = frozenset(
    str(uid)
    for uid in (
        CTImageStorage,
        EnhancedCTImageStorage,
        LegacyConvertedEnhancedCTImageStorage,
        MRImageStorage,
        EnhancedMRImageStorage,
        EnhancedMRColorImageStorage,
        LegacyConvertedEnhancedMRImageStorage,
        ComputedRadiographyImageStorage,
        DigitalXRayImageStorageForPresentation,
        DigitalXRayImageStorageForProcessing,
        DigitalMammographyXRayImageStorageForPresentation,
        DigitalMammographyXRayImageStorageForProcessing,
        UltrasoundImageStorage,
        UltrasoundMultiFrameImageStorage,
        VLPhotographicImageStorage,
        DermoscopicPhotographyImageStorage,
        SecondaryCaptureImageStorage,
        MultiFrameGrayscaleByteSecondaryCaptureImageStorage,
        MultiFrameGrayscaleWordSecondaryCaptureImageStorage,
        MultiFrameTrueColorSecondaryCaptureImageStorage,
    )
)


def supported_contexts(accept: str) -> list[PresentationContext]:
    """The presentation contexts the Storage SCP offers: Verification plus the storage classes.

    `accept` is `dicom.accept_sop_classes`: 'analysable' or 'all-storage'. Every transfer syntax
    pynetdicom knows is accepted; instances in one the loader cannot decode are skipped at
    analysis with a log line naming the file (never refused mid-study).
    """
    classes = sorted(ANALYSABLE_SOP_CLASSES)
    if accept == "all-storage":
        classes = sorted({*classes, *(str(cx.abstract_syntax) for cx in AllStoragePresentationContexts)})
    return [build_context(Verification), *(build_context(uid, ALL_TRANSFER_SYNTAXES) for uid in classes)]
