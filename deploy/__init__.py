"""Deployment of biomedclip-map: MAP staging and build (stage_map.py, build-map.sh), MDE workflow, Triton notes."""
