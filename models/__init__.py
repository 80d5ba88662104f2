"""Model registry: model folders and their manifests, fetching real weights, building test models.

Importing this package is light: torch and open_clip are imported only when a model is built,
fetched or loaded for the PyTorch backend. Start at `models.directory.open_model_dir`.
"""
