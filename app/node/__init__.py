"""`biomedclip-map serve`: a durable DICOM node around the MAP's application graph.

A PACS sends studies to the node's Storage SCP; each complete study is analysed by the same graph
`biomedclip-map run` uses, with the model loaded once and kept warm; the SR and the Secondary
Capture go back to the configured destinations by C-STORE (or DICOMweb STOW-RS).

Modules, in the order a study meets them:

- `config`: the YAML configuration and its command-line overrides, validated with errors naming keys;
- `scp`: the pynetdicom Storage SCP (association rules, TLS, statuses for bad input);
- `spool`, `durable_files`: the on-disk states and the fsync/rename primitives they are built from;
- `priority`: whether an instance makes its study urgent (STAT);
- `grouping`: the quiet period that completes a study, and late instances;
- `work_queue`: the durable priority queue, retries and quarantine;
- `runner`: one run of the application graph per study with the warm analyzer;
- `superseding`: the Predecessor Documents Sequence of a re-run study's SR;
- `study_archive`: processed studies kept for late instances, and the node's own results;
- `outbox`, `destinations`, `delivery`: durable delivery with retries and backoff;
- `metrics`, `http_endpoint`: `/healthz`, `/readyz`, `/metrics` on loopback;
- `service`: the node as one object (recovery after a crash, threads, processing of a job);
- `command`: the `serve` command line and `--check-config`.
"""
