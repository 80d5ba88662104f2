"""Per-modality preprocessing: settings, windowing, geometry (resize, pad) and the prepared tensors of each selected series."""
