"""The bottom layer: what every other package shares and nothing of theirs.

- `product`: the product's name, version and what it writes into its outputs to recognise them;
- `codes`: a coded concept (scheme, value, meaning);
- `model_identity`: what a report says about the model that produced it;
- `zero_shot_tasks`: zero-shot task definitions and their configuration file;
- `configuration`: the schema layer of the product's configuration files and where the bundled ones are;
- `atomic_files`: writing a file so that a reader never sees it half-written.

Layers depend one way: common ← models ← engines ← operators ← app (checked by import-linter).
"""
