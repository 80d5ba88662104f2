"""Zero-shot scoring: image and text embeddings, prompt ensembles, probabilities per task, and the analyzer that scores a prepared study."""
