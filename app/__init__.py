"""biomedclip-map: the MONAI Deploy Application (graph, entry points, front ends, configuration)."""

from common.product import APP_NAME, __version__

__all__ = ["APP_NAME", "__version__"]
