"""Keeping PHI out of what leaves the product: the free-text scrubber and its vocabularies, the opt-in clinical-context line, and the de-identified export."""
