"""What every output shares and how it is written: the patient and study identity outputs carry, atomic DICOM writing, the JSON results and the audit trail."""
