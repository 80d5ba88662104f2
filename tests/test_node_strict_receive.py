"""Strict receive: the node acknowledges a data set only if it is complete and encoded as negotiated.

A bounded fuzzer sends, over real associations on loopback, cuts (inside element headers, inside
values, at random), trailing bytes, byte flips and the other VR form of several real data sets
(pydicom's bundled CT and MR, and generated CT with sequences and pixel data). Every answer must be
Success or 0xC210 (or 0xA900 when a flip hits a UID), the structural breakages must be refused,
each refusal must be kept in `rejected/`, and every acknowledged file must be read completely
by DCMTK's `dcmdump` and by pydicom.
"""

from __future__ import annotations

import random
import shutil
import subprocess
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.filewriter import write_file_meta_info
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, generate_uid
from pynetdicom import AE, _config
from pynetdicom.dsutils import encode

from app.node.strict_parse import MalformedDataSet, check_encoding
from operators.dicom_input.study_refs import study_ref, uid_ref
from tests.fixtures_dicom import image_dataset
from tests.fixtures_node import node_config, running_node

SEED = 1313
RANDOM_CUTS = 6
FLIPS = 6


def generated_ct(transfer_syntax: str) -> Dataset:
    """A CT slice with nested sequences and pixel data, in `transfer_syntax`."""
    ds = image_dataset(modality="CT", rows=32, columns=32, transfer_syntax=transfer_syntax, InstanceNumber=1)
    item = Dataset()
    item.ReferencedSOPClassUID = "1.2.840.10008.3.1.2.3.1"
    item.ReferencedSOPInstanceUID = generate_uid()
    ds.ReferencedStudySequence = [item]
    request = Dataset()
    request.RequestedProcedureID = "RP1"
    request.ScheduledProcedureStepSequence = [Dataset()]
    request.ScheduledProcedureStepSequence[0].ScheduledProcedureStepID = "SPS1"
    ds.RequestAttributesSequence = [request]
    return ds


def real_datasets() -> list[Dataset]:
    """pydicom's bundled CT and MR (real scanner headers) and two generated CTs, with fresh SOP Instance UIDs."""
    sets = []
    for name in ("CT_small.dcm", "MR_small.dcm"):
        ds = pydicom.dcmread(get_testdata_file(name))
        sets.append(ds)
    sets += [generated_ct(ExplicitVRLittleEndian), generated_ct(ImplicitVRLittleEndian)]
    for ds in sets:
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    return sets


def is_implicit(ds: Dataset) -> bool:
    return ds.file_meta.TransferSyntaxUID == ImplicitVRLittleEndian


def element_boundaries(ds: Dataset) -> list[int]:
    """Byte offsets where each top-level element starts in the encoding of `ds` (pydicom's writer)."""
    implicit = is_implicit(ds)
    offsets, partial = [], Dataset()
    for element in ds:
        offsets.append(len(encode(partial, implicit, True)) if len(partial) else 0)
        partial.add(element)
    return offsets


def mutants(ds: Dataset, rng: random.Random) -> list[tuple[str, bytes, bool]]:
    """(what, data set bytes, must be refused) for one data set; the first is the unchanged data set."""
    implicit = is_implicit(ds)
    body = encode(ds, implicit, True)
    out = [("intact", body, False)]
    starts = element_boundaries(ds)
    for start in rng.sample(starts[1:], min(4, len(starts) - 1)) + [starts[-1]]:
        for into in (1, 3, 5, 7):
            out.append((f"cut {into} bytes into the header at {start}", body[: start + into], True))
    pixel_start = starts[-1]
    out.append(("cut inside pixel data", body[: pixel_start + 12 + (len(body) - pixel_start - 12) // 2], True))
    for cut in rng.sample(range(1, len(body)), RANDOM_CUTS):
        out.append((f"cut at {cut}", body[:cut], cut not in starts))
    for extra in (1, 2, 7, 16):
        out.append((f"{extra} trailing bytes", body + bytes(rng.randrange(256) for _ in range(extra)), True))
    out.append(("other VR form", encode(ds, not implicit, True), True))
    for _ in range(FLIPS):
        at = rng.randrange(0, min(len(body), 400))
        flipped = bytearray(body)
        flipped[at] ^= 0xFF
        out.append((f"byte {at} flipped", bytes(flipped), False))
    return out


def raw_file(path: Path, ds: Dataset, body: bytes) -> Path:
    """A Part 10 file with the data set's File Meta Information and `body` as its data set bytes."""
    with open(path, "wb") as handle:
        handle.write(b"\x00" * 128 + b"DICM")
        write_file_meta_info(handle, ds.file_meta)
        handle.write(body)
    return path


def test_check_encoding_accepts_pydicoms_well_formed_test_files_and_refuses_its_truncated_ones():
    for name, broken in (("CT_small.dcm", False), ("MR_small.dcm", False), ("rtplan.dcm", False), ("MR_truncated.dcm", True)):
        path = get_testdata_file(name)
        with open(path, "rb") as handle:
            raw = handle.read()
        meta = pydicom.dcmread(path, stop_before_pixels=True).file_meta
        offset = 132 + 12 + meta.FileMetaInformationGroupLength
        if broken:
            with pytest.raises(MalformedDataSet, match="truncated"):
                check_encoding(raw[offset:], meta.TransferSyntaxUID)
        else:
            check_encoding(raw[offset:], meta.TransferSyntaxUID)


@pytest.mark.skipif(shutil.which("dcmdump") is None, reason="dcmdump (DCMTK) is not installed")
@pytest.mark.filterwarnings("ignore::UserWarning")  # pydicom warns while reading broken bytes
def test_bounded_fuzzer_every_acknowledged_instance_is_readable_and_every_breakage_refused(tmp_path, node_work):
    rng = random.Random(SEED)
    spool = tmp_path / "spool"
    config = node_config(spool, node_work, quiet_period_s=600)
    outcomes: list[tuple[str, int, bool]] = []
    acknowledged: list[Path] = []
    previous = _config.STORE_SEND_CHUNKED_DATASET
    _config.STORE_SEND_CHUNKED_DATASET = True  # send the file's bytes as they are, not re-encoded
    try:
        with running_node(config, node_work) as node:
            for index, ds in enumerate(real_datasets()):
                ae = AE(ae_title="TESTSCU")
                ae.add_requested_context(ds.file_meta.MediaStorageSOPClassUID, [ds.file_meta.TransferSyntaxUID])
                assoc = ae.associate("127.0.0.1", node.scp.port, ae_title="BIOMEDCLIP")
                assert assoc.is_established
                stored = spool / "incoming" / study_ref(ds.StudyInstanceUID, node.salt) / "instances" / (
                    uid_ref(ds.SOPInstanceUID, node.salt, prefix="in") + ".dcm"
                )
                for number, (what, body, must_refuse) in enumerate(mutants(ds, rng)):
                    path = raw_file(tmp_path / f"send-{index}-{number}.dcm", ds, body)
                    status = int(assoc.send_c_store(path).Status)
                    outcomes.append((f"data set {index}: {what}", status, must_refuse))
                    if status == 0 and stored.exists():
                        keep = tmp_path / "acknowledged" / f"{index}-{number}.dcm"
                        keep.parent.mkdir(exist_ok=True)
                        shutil.copyfile(stored, keep)
                        acknowledged.append(keep)
                        stored.unlink()
                assoc.release()
    finally:
        _config.STORE_SEND_CHUNKED_DATASET = previous
    assert all(status in (0x0000, 0xC210, 0xA900) for _, status, _ in outcomes), outcomes
    wrongly = [(what, hex(status)) for what, status, must in outcomes if must and status == 0]
    assert not wrongly, f"broken data sets acknowledged: {wrongly}"
    intact = [status for what, status, _ in outcomes if what.endswith(": intact")]
    assert intact == [0, 0, 0, 0], "the intact data sets are acknowledged"
    refused = sum(1 for _, status, _ in outcomes if status != 0)
    assert refused >= 4 * 25 and len(list((spool / "rejected").glob("*.dcm"))) == refused, "every refusal is kept"
    assert len(acknowledged) >= 4
    for path in acknowledged:
        dump = subprocess.run(["dcmdump", "-q", "+E", str(path)], capture_output=True, text=True, errors="replace", timeout=60)
        assert dump.returncode == 0 and "E:" not in dump.stderr, f"dcmdump cannot read {path.name}: {dump.stderr}"
        ds = pydicom.dcmread(path)
        for element in ds.iterall():
            _ = element.value  # every element decodes
        assert ds.SOPInstanceUID and "PixelData" in ds
