"""Inference backends (ONNX Runtime, PyTorch), ONNX export and caches.

Importing this package is light: torch is imported only by the PyTorch backend and the ONNX
exporter, when they are used. Start at `engines.selection.open_backend`.
"""
