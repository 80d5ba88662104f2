"""The DICOM Structured Report: its content (TID 1500), its read-back, and the product's codes."""
