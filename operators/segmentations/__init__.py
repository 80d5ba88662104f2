"""DICOM Segmentations of the label maps specialists compute (the burn specialist's wound map).

A specialist returns a `operators.messages.SpecialistSegmentation` per analysed image: a label map
and one coded `SegmentDefinition` per label. `operators.segmentations.segmentation` turns each into a
highdicom `Segmentation` (Segmentation Storage, BINARY, one frame per segment) at the source
image's own Rows × Columns, filed into the source study as a new series beside the Secondary
Captures, and gives the report the references to its segments (`SegmentFindings`, TID 1410).
"""
