"""biomedclip-map: the MONAI Deploy Application (graph, entry points, configuration)."""

__version__ = "0.1.0"
APP_NAME = "biomedclip-map"
