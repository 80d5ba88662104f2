"""Prompt recovery: results go as soon as a destination that was down answers again.

The PACS (a pynetdicom Storage SCP) is down while a study is processed; the node's backoff grows
(0.5, 1, 2, 4, 8 s...). When the PACS comes back on the same port, the SR must arrive within the
probe interval, long before the backoff's next attempt.
"""

from __future__ import annotations

import logging
import time

from pydicom.uid import generate_uid

from tests.fixtures_dicom import image_dataset
from tests.fixtures_node import DicomReceiver, destination, free_port, node_config, running_node, send_datasets, wait_until


def test_results_go_as_soon_as_the_destination_answers_again_not_at_the_end_of_the_backoff(tmp_path, node_work, caplog):
    caplog.set_level(logging.INFO)
    pacs = DicomReceiver(port=free_port())  # not started yet: the destination is down
    study, series = generate_uid(), generate_uid()
    slices = [image_dataset(modality="CT", study_uid=study, series_uid=series, rows=16, columns=16, InstanceNumber=i + 1) for i in range(2)]
    config = node_config(
        tmp_path / "spool", node_work, destinations=[destination(pacs)],
        delivery={"retry_initial_s": 0.5, "retry_max_s": 120, "max_rejections": 3, "reachability_cache_s": 0},
    )
    try:
        with running_node(config, node_work) as node:
            assert send_datasets(node.scp.port, slices) == [0, 0]
            retries = lambda: node.metrics.registry.get_sample_value("biomedclip_node_delivery_retries_total", {"destination": "pacs"}) or 0
            wait_until(lambda: retries() >= 5, 60, "five failed delivery attempts (backoff now 8 s)")
            worker = node.deliveries[0]
            backoff_left = worker.down_until - time.time()
            pacs.start()
            came_back = time.monotonic()
            wait_until(lambda: pacs.of_modality("SR"), 30, "the SR at the PACS once it is back")
            waited = time.monotonic() - came_back
    finally:
        pacs.stop()
    assert backoff_left > 4, f"the backoff had grown ({backoff_left:.1f} s left)"
    assert waited < 2.0, f"the SR arrived {waited:.1f} s after the PACS came back (backoff had {backoff_left:.1f} s left)"
    assert "it answers again; 1 result set(s) waiting are sent now" in caplog.text
