"""A corpus of studies built by code to look like what PACS really send, header habits included.

Each builder writes one study folder and returns a `CorpusStudy`: its name, its Study Instance UID
and what the MAP must do with it. The classes are those seen in the field: mixed patients in one
study, derived images (dose-report screen saves, other products' captures, burned-in text), bad
header values (dates with separators, times with colons, ages without a unit, sex as a word,
"unknown" in a date), over-long values, UTF-8 without a declared character set and other character
sets, absent optional attributes, images too small or blank to analyse, multi-frame secondary
captures, de-identified sources without a method, irregular volumes, studies of many series.

Identifiers are synthetic; the pixel patterns are ramps and shapes, never clinical data.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset
from pydicom.uid import SecondaryCaptureImageStorage, generate_uid

from tests.fixtures_dicom import AXIAL, image_dataset, write_dataset

REPORTED, NOTHING, REFUSED = "reported", "nothing_selected", "refused"


@dataclass
class CorpusStudy:
    """One study of the corpus and what must happen to it."""

    name: str
    study_uid: str
    outcome: str
    #: Series Instance UIDs that must be analysed (the report's evidence), when the study is reported.
    analysed_series: set[str] = field(default_factory=set)
    #: Values that must never appear in the log (they are patient data or invalid source values).
    secret_values: set[str] = field(default_factory=set)
    #: Attributes whose dciodvfy errors are allowed on the outputs: identity values copied verbatim.
    verbatim_errors: set[str] = field(default_factory=set)
    notes: dict[str, object] = field(default_factory=dict)


def _ramp(rows: int, columns: int, rgb: bool = False, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = np.add.outer(np.arange(rows), np.arange(columns)).astype(np.float64)
    base += rng.normal(0, 2, base.shape)
    if rgb:
        image = np.stack([base * 2.0, base * 1.2 + 40, base * 0.8 + 20], axis=-1)
        return np.clip(image, 0, 255).astype(np.uint8)
    return np.clip(base * 10, 0, 3000).astype(np.int16)


def pacs_image(
    *, modality: str, study_uid: str, series_uid: str, patient: tuple[str, str] = ("Doe^Jane", "PAT-1001"),
    rows: int = 32, columns: int = 32, rgb: bool = False, seed: int = 0, **attributes: object,
) -> Dataset:
    """An image instance with the header a PACS typically holds, pixels a ramp (never blank)."""
    name, patient_id = patient
    ds = image_dataset(
        modality=modality, study_uid=study_uid, series_uid=series_uid, rows=rows, columns=columns, rgb=rgb,
        PatientName=name, PatientID=patient_id, PatientBirthDate="19600101", PatientSex="F", StudyTime="101500",
        AccessionNumber="ACC-1001", StudyID="1", ReferringPhysicianName="Ref^Doctor", Manufacturer="ACME Imaging",
    )
    pixels = _ramp(rows, columns, rgb, seed)
    ds.PixelData = pixels.tobytes()
    for keyword, value in attributes.items():
        if value is None:
            if keyword in ds:
                delattr(ds, keyword)
        else:
            setattr(ds, keyword, value)
    return ds


def _ct_series(folder: Path, study_uid: str, count: int = 3, *, series_number: int = 1, positions=None,
               thicknesses=None, patient=("Doe^Jane", "PAT-1001"), **attributes: object) -> str:
    series_uid = generate_uid()
    positions = positions if positions is not None else [float(i) * 2.0 for i in range(count)]
    for index, z in enumerate(positions):
        values = dict(ImageType=["ORIGINAL", "PRIMARY", "AXIAL"], ImageOrientationPatient=AXIAL,
                      ImagePositionPatient=[0.0, 0.0, z], InstanceNumber=index + 1, PatientPosition="HFS",
                      SeriesNumber=series_number, SliceThickness=(thicknesses[index] if thicknesses else 2.0),
                      RescaleIntercept=-1024, RescaleSlope=1)
        values.update(attributes)
        ds = pacs_image(modality="CT", study_uid=study_uid, series_uid=series_uid, patient=patient, seed=index, **values)
        write_dataset(folder / f"se{series_number:02d}-{index:03d}.dcm", ds)
    return series_uid


# --------------------------------------------------------------------------- identity


def mixed_patients(folder: Path) -> CorpusStudy:
    """One Study Instance UID holding a CT of one patient and a photograph of another (a merged study)."""
    study = generate_uid()
    _ct_series(folder, study, patient=("Kowalczyk^Teodora", "PAT-2001"))
    photo = pacs_image(modality="XC", study_uid=study, series_uid=generate_uid(), rgb=True,
                       patient=("Brennan^Oisin", "PAT-2002"), SeriesNumber=2)
    write_dataset(folder / "photo.dcm", photo)
    return CorpusStudy("mixed-patients", study, REFUSED, secret_values={"PAT-2001", "PAT-2002", "Kowalczyk", "Brennan"})


def same_id_other_name(folder: Path) -> CorpusStudy:
    """Same Patient ID, two different people's names (a wrong worklist entry)."""
    study = generate_uid()
    _ct_series(folder, study, patient=("Abara^Chidi", "PAT-3001"))
    _ct_series(folder, study, series_number=2, patient=("Lindqvist^Maja", "PAT-3001"))
    return CorpusStudy("same-id-other-name", study, REFUSED, secret_values={"Abara", "Lindqvist"})


def same_patient_written_differently(folder: Path) -> CorpusStudy:
    """One patient whose name case, padding and birth-date format differ between devices: not a conflict."""
    study = generate_uid()
    series = _ct_series(folder, study, patient=("DOE^JOHN", "PAT-4001"), PatientBirthDate="19550214")
    photo = pacs_image(modality="XC", study_uid=study, series_uid=generate_uid(), rgb=True,
                       patient=("Doe^John^^^", "PAT-4001"), SeriesNumber=2, PatientBirthDate="1955-02-14")
    write_dataset(folder / "photo.dcm", photo)
    return CorpusStudy("same-patient-written-differently", study, REPORTED, analysed_series={series, photo.SeriesInstanceUID})


# --------------------------------------------------------------------------- derived images


def dose_report_beside_ct(folder: Path) -> CorpusStudy:
    """A head CT with the scanner's dose-report screen save (SC, DERIVED\\SECONDARY, WSD, burned-in text)."""
    study = generate_uid()
    series = _ct_series(folder, study, BodyPartExamined="HEAD")
    dose = pacs_image(modality="CT", study_uid=study, series_uid=generate_uid(), rgb=True, rows=48, columns=64,
                      SOPClassUID=SecondaryCaptureImageStorage, ImageType=["DERIVED", "SECONDARY"],
                      ConversionType="WSD", BurnedInAnnotation="YES", SeriesNumber=999, SeriesDescription="Dose Report")
    dose.file_meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    write_dataset(folder / "dose.dcm", dose)
    return CorpusStudy("dose-report-beside-ct", study, REPORTED, analysed_series={series})


def screen_save_as_ot_colour(folder: Path) -> CorpusStudy:
    """Only a colour OT screen save (what a "burn photograph" rule would otherwise pick up)."""
    study = generate_uid()
    capture = pacs_image(modality="OT", study_uid=study, series_uid=generate_uid(), rgb=True, rows=48, columns=64,
                         ImageType=["DERIVED", "SECONDARY"], ConversionType="WSD", BurnedInAnnotation="YES")
    write_dataset(folder / "screen.dcm", capture)
    return CorpusStudy("screen-save-ot-colour", study, NOTHING)


def other_product_capture(folder: Path) -> CorpusStudy:
    """Another AI product's colour capture (SC, WSD) filed in a photo study, next to the real photograph."""
    study = generate_uid()
    photo = pacs_image(modality="XC", study_uid=study, series_uid=generate_uid(), rgb=True, SeriesNumber=1,
                       ImageType=["ORIGINAL", "PRIMARY"])
    write_dataset(folder / "photo.dcm", photo)
    other = pacs_image(modality="OT", study_uid=study, series_uid=generate_uid(), rgb=True, SeriesNumber=300,
                       ConversionType="WSD", Manufacturer="Other AI Inc", SeriesDescription="AI heatmap")
    write_dataset(folder / "other-ai.dcm", other)
    return CorpusStudy("other-product-capture", study, REPORTED, analysed_series={photo.SeriesInstanceUID})


# --------------------------------------------------------------------------- header values


def bad_dates_and_words(folder: Path) -> CorpusStudy:
    """Dates with separators, a time with colons, 'unknown' in a birth date, an age without unit, sex as a word."""
    study = generate_uid()
    series = _ct_series(folder, study, StudyDate="2024-03-15", StudyTime="10:15:00", PatientBirthDate="unknown",
                        PatientAge="54", PatientSex="Female")
    return CorpusStudy("bad-dates-and-words", study, REPORTED, analysed_series={series},
                       notes={"StudyDate": "20240315", "StudyTime": "101500", "PatientBirthDate": "", "PatientSex": "F"})


def acr_nema_dates_and_day_first_birth(folder: Path) -> CorpusStudy:
    """ACR-NEMA style dots in a date, a day-first birth date (ambiguous: left empty), an age with a word unit."""
    study = generate_uid()
    series = _ct_series(folder, study, StudyDate="2024.03.15", PatientBirthDate="14.02.1955", PatientAge="54 years",
                        PatientSex="m")
    return CorpusStudy("acr-nema-dates", study, REPORTED, analysed_series={series}, secret_values={"14.02.1955"},
                       notes={"StudyDate": "20240315", "PatientBirthDate": "", "PatientAge": "054Y", "PatientSex": "M"})


def over_long_values(folder: Path) -> CorpusStudy:
    """A 70-character Patient ID, 74-character description, 78-character referring physician, 20-character accession."""
    study = generate_uid()
    patient_id = "P" + "0123456789" * 6 + "ABCDEFGHI"
    accession = "ACC-2024-0000000042X"
    series = _ct_series(folder, study, patient=("Langhorne^Vesna", patient_id), AccessionNumber=accession,
                        StudyDescription="CT HEAD WITHOUT CONTRAST " + "ROUTINE PROTOCOL " * 3,
                        ReferringPhysicianName="Quarterman-Abernathy-Wolcott-Pemberton-Ashdown-Fairweather^" + "Philippa" * 3)
    return CorpusStudy("over-long-values", study, REPORTED, analysed_series={series},
                       verbatim_errors={"Patient ID", "Accession Number"},
                       notes={"PatientID": patient_id, "AccessionNumber": accession})


def utf8_without_character_set(folder: Path) -> CorpusStudy:
    """UTF-8 names written by a newer device without Specific Character Set."""
    study = generate_uid()
    series_uid = generate_uid()
    ds = pacs_image(modality="XC", study_uid=study, series_uid=series_uid, rgb=True, patient=("PLACEHOLDERNAME", "PAT-5001"))
    if "SpecificCharacterSet" in ds:
        del ds.SpecificCharacterSet
    path = write_dataset(folder / "photo.dcm", ds)
    name = "Müller^Jürgen".encode()
    data = path.read_bytes().replace(b"PLACEHOLDERNAME ", name + b" " * (16 - len(name)) if len(name) < 16 else name)
    path.write_bytes(data)
    return CorpusStudy("utf8-undeclared", study, REPORTED, analysed_series={series_uid},
                       notes={"PatientName": "Müller^Jürgen"})


def latin1_declared(folder: Path) -> CorpusStudy:
    """ISO_IR 100 (Latin-1) declared and used: must stay Latin-1 (not taken for UTF-8)."""
    study = generate_uid()
    series = _ct_series(folder, study, patient=("Gómez^Añá", "PAT-5002"), SpecificCharacterSet="ISO_IR 100")
    return CorpusStudy("latin1-declared", study, REPORTED, analysed_series={series}, notes={"PatientName": "Gómez^Añá"})


def japanese_iso2022(folder: Path) -> CorpusStudy:
    """ISO 2022 IR 87 with ideographic and phonetic name groups."""
    study = generate_uid()
    name = "Yamada^Tarou=山田^太郎=やまだ^たろう"
    series = _ct_series(folder, study, patient=(name, "PAT-5003"), SpecificCharacterSet=["", "ISO 2022 IR 87"])
    return CorpusStudy("japanese-iso2022", study, REPORTED, analysed_series={series}, notes={"PatientName": name})


def missing_optional_attributes(folder: Path) -> CorpusStudy:
    """CT and MR without Image Type, Series Number, study date/time, accession, sex, birth date, referring physician."""
    study = generate_uid()
    absent = dict(ImageType=None, SeriesNumber=None, StudyDate=None, StudyTime=None, AccessionNumber=None,
                  PatientSex=None, PatientBirthDate=None, ReferringPhysicianName=None, StudyID=None, SliceThickness=None)
    ct = _ct_series(folder, study, **absent)
    mr_uid = generate_uid()
    for index in range(2):
        ds = pacs_image(modality="MR", study_uid=study, series_uid=mr_uid, seed=index, ImagePositionPatient=[0, 0, index],
                        ImageOrientationPatient=AXIAL, InstanceNumber=index + 1, **absent)
        write_dataset(folder / f"mr-{index}.dcm", ds)
    return CorpusStudy("missing-optional", study, REPORTED, analysed_series={ct, mr_uid})


# --------------------------------------------------------------------------- pixels


def too_small_image(folder: Path) -> CorpusStudy:
    """A 3 × 3 pixel CT image: nothing to analyse, not a failure."""
    study = generate_uid()
    write_dataset(folder / "tiny.dcm", pacs_image(modality="CT", study_uid=study, series_uid=generate_uid(), rows=3, columns=3))
    return CorpusStudy("too-small", study, NOTHING)


def blank_photograph(folder: Path) -> CorpusStudy:
    """An all-black photograph (a failed capture): nothing to analyse."""
    study = generate_uid()
    ds = pacs_image(modality="XC", study_uid=study, series_uid=generate_uid(), rgb=True)
    ds.PixelData = bytes(len(ds.PixelData))
    write_dataset(folder / "black.dcm", ds)
    return CorpusStudy("blank-photograph", study, NOTHING)


def two_frame_secondary_capture(folder: Path) -> CorpusStudy:
    """A digitised colour photograph stored as a (non-conformant) two-frame single-frame SC."""
    study = generate_uid()
    series_uid = generate_uid()
    ds = pacs_image(modality="XC", study_uid=study, series_uid=series_uid, rgb=True, rows=32, columns=32,
                    SOPClassUID=SecondaryCaptureImageStorage, ConversionType="DI")
    ds.file_meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    ds.NumberOfFrames = 2
    ds.PixelData = np.concatenate([_ramp(32, 32, True, 1), _ramp(32, 32, True, 2)]).tobytes()
    write_dataset(folder / "two-frames.dcm", ds)
    return CorpusStudy("two-frame-sc", study, REPORTED, analysed_series={series_uid})


def deidentified_without_method(folder: Path) -> CorpusStudy:
    """A research copy marked Patient Identity Removed YES that does not say how it was de-identified."""
    study = generate_uid()
    series = _ct_series(folder, study, PatientIdentityRemoved="YES")
    return CorpusStudy("deidentified-without-method", study, REPORTED, analysed_series={series})


def irregular_volume(folder: Path) -> CorpusStudy:
    """A CT stack with a missing slice, a duplicate position and slices of two thicknesses."""
    study = generate_uid()
    positions = [0.0, 2.0, 4.0, 4.0, 6.0, 12.0, 14.0, 16.0]
    series = _ct_series(folder, study, len(positions), positions=positions,
                        thicknesses=[2.0, 2.0, 2.0, 2.0, 5.0, 2.0, 2.0, 2.0])
    return CorpusStudy("irregular-volume", study, REPORTED, analysed_series={series})


def many_series(folder: Path) -> CorpusStudy:
    """A study of 20 CT series (a multi-phase protocol): the capture must stay a sensible size."""
    study = generate_uid()
    uids = {_ct_series(folder, study, 2, series_number=n) for n in range(1, 21)}
    return CorpusStudy("many-series", study, REPORTED, analysed_series=uids)


BUILDERS: tuple[Callable[[Path], CorpusStudy], ...] = (
    mixed_patients, same_id_other_name, same_patient_written_differently, dose_report_beside_ct,
    screen_save_as_ot_colour, other_product_capture, bad_dates_and_words, acr_nema_dates_and_day_first_birth,
    over_long_values, utf8_without_character_set, latin1_declared, japanese_iso2022, missing_optional_attributes,
    too_small_image, blank_photograph, two_frame_secondary_capture, deidentified_without_method, irregular_volume,
    many_series,
)


def build_corpus(root: Path) -> dict[str, CorpusStudy]:
    """Write every corpus study into its own folder under `root`; the studies by name."""
    studies = {}
    with warnings.catch_warnings():  # pydicom warns about the invalid values the corpus holds on purpose
        warnings.simplefilter("ignore", UserWarning)
        for build in BUILDERS:
            folder = root / build.__name__.replace("_", "-")
            study = build(folder)
            studies[study.name] = study
    return studies
