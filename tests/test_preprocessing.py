"""ModalityPreprocessing logic on pydicom's bundled test files and small images derived from them.

Each test checks what the model would actually receive: tensor values at known pixels against
the window or scaling the product promises, the inversion of MONOCHROME1, padding, decoded
colours, which slices and frames were chosen, and the errors a PACS administrator would see.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from operators.dicom_input import pixel_data
from operators.preparation.image_geometry import fit_and_pad, sample_indices
from operators.messages import InstanceFile, SelectedSeries, SeriesHeader
from operators.preparation.preprocessing import (
    PreprocessingConfigError,
    PreprocessingError,
    PreprocessingSettings,
    load_preprocessing_settings,
    prepare_series,
)
from operators.preparation.preprocessing_settings import (
    CtSettings,
    MrSettings,
    MultiframeSettings,
    ProjectionSettings,
    VolumeSettings,
)
from operators.preparation.windowing import frame_pipeline

MEAN = (0.48145466, 0.4578275, 0.40821073)  # CLIP / BiomedCLIP
STD = (0.26862954, 0.26130258, 0.27577711)
SETTINGS_FILE = Path(__file__).resolve().parents[1] / "app" / "config" / "preprocessing.yaml"
DX_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.1.1"  # Digital X-Ray Image Storage - For Presentation


# --------------------------------------------------------------------------- helpers


def bundled(name: str) -> Path:
    """A test file shipped inside the pydicom wheel (never downloaded)."""
    path = get_testdata_file(name, download=False)
    assert path is not None, f"{name} is not bundled with this pydicom"
    return Path(path)


def instance_for(path: Path, slice_position: float | None = None) -> InstanceFile:
    header = pydicom.dcmread(path, stop_before_pixels=True)
    number = header.get("InstanceNumber")
    return InstanceFile(
        path=path,
        sop_class_uid=str(header.SOPClassUID),
        sop_instance_uid=str(header.SOPInstanceUID),
        transfer_syntax_uid=str(header.file_meta.TransferSyntaxUID),
        instance_number=int(number) if number not in (None, "") else None,
        number_of_frames=int(header.get("NumberOfFrames", 1) or 1),
        slice_position=slice_position,
    )


def selected(*instances: InstanceFile, name: str = "test") -> SelectedSeries:
    header = pydicom.dcmread(instances[0].path, stop_before_pixels=True)
    return SelectedSeries(name, SeriesHeader(str(header.get("SeriesInstanceUID", "1.2.3")), header, list(instances)))


def select_files(*paths: Path) -> SelectedSeries:
    return selected(*(instance_for(p) for p in paths))


def unit_image(tensor: np.ndarray) -> np.ndarray:
    """Undo the mean/std normalisation: a (3, H, W) tensor back to an (H, W, 3) image in [0, 1]."""
    return tensor.transpose(1, 2, 0) * np.asarray(STD, np.float32) + np.asarray(MEAN, np.float32)


def normalised(value: float) -> np.ndarray:
    """What a grey level in [0, 1] becomes in each of the three normalised channels."""
    return (value - np.asarray(MEAN, np.float32)) / np.asarray(STD, np.float32)


def write_derived(path: Path, source: str, pixels: np.ndarray, **attributes: object) -> Path:
    """Write a copy of a bundled greyscale file with new pixels and attributes (uncompressed)."""
    ds = pydicom.dcmread(bundled(source))
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.Rows, ds.Columns = pixels.shape[-2:]
    if pixels.ndim == 3:
        ds.NumberOfFrames = pixels.shape[0]
    for keyword, value in attributes.items():
        if value is None:
            if keyword in ds:
                delattr(ds, keyword)
        else:
            setattr(ds, keyword, value)
    ds.PixelData = np.ascontiguousarray(pixels).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def write_ct(path: Path, hu: np.ndarray, slope: float = 1.0, intercept: float = -1024.0, **attributes: object) -> Path:
    """A CT slice (from CT_small.dcm) whose pixels are the Hounsfield units `hu` after rescale."""
    stored = np.round((hu - intercept) / slope).astype(np.int16)
    return write_derived(path, "CT_small.dcm", stored, RescaleSlope=slope, RescaleIntercept=intercept, **attributes)


def write_dx(path: Path, stored: np.ndarray, photometric: str, **attributes: object) -> Path:
    """A 12-bit unsigned DX image derived from CT_small.dcm (no DX file ships with pydicom)."""
    return write_derived(
        path, "CT_small.dcm", stored.astype(np.uint16),
        Modality="DX", SOPClassUID=DX_SOP_CLASS, PhotometricInterpretation=photometric,
        BitsAllocated=16, BitsStored=12, HighBit=11, PixelRepresentation=0,
        RescaleSlope=None, RescaleIntercept=None, **attributes,
    )


def marked(image: np.ndarray) -> np.ndarray:
    """`image` with its top-left pixel one step brighter, so that a uniform test pattern is not blank.

    Preprocessing leaves blank images (every pixel the same value) out; the marker sits in a corner,
    away from the pixels the tests read.
    """
    image = np.array(image, copy=True)
    image.flat[0] = image.flat[0] + 1
    return image


def bands(values: list[float], rows: int = 128, cols: int = 128) -> np.ndarray:
    """An image of equal vertical bands, band i holding values[i] (top-left pixel marked, see `marked`)."""
    image = np.empty((rows, cols), dtype=np.float64)
    edges = np.linspace(0, cols, len(values) + 1).round().astype(int)
    for value, start, stop in zip(values, edges[:-1], edges[1:]):
        image[:, start:stop] = value
    return marked(image)


def band_centres(count: int, size: int = 224) -> list[int]:
    """Column of the centre of each band once the square image fills the 224×224 input."""
    return [int((i + 0.5) * size / count) for i in range(count)]


# --------------------------------------------------------------------------- settings


def test_shipped_settings_are_the_defaults_with_the_documented_ct_presets():
    settings = load_preprocessing_settings(SETTINGS_FILE)
    assert settings == PreprocessingSettings()
    presets = {name: (p.width, p.level) for name, p in settings.ct.presets.items()}
    assert presets == {"soft_tissue": (400, 40), "lung": (1500, -600), "bone": (1800, 400), "brain": (80, 40)}
    assert settings.ct.body_part_windows["HEAD"] == "brain"
    assert settings.ct.body_part_windows["CHEST"] == "lung"
    assert settings.image_size == 224


@pytest.mark.parametrize(
    "text, named",
    [
        ("ct:\n  windw: lung\n", "windw"),
        ("ct:\n  window: liver\n", "window: 'liver'"),
        ("ct:\n  channel_windows: [lung, bone]\n", "channel_windows"),
        ("ct:\n  presets:\n    lung: {width: 0, level: -600}\n", "presets.lung"),
        ("ct:\n  body_part_windows: {CHEST: mediastinum}\n", "body_part_windows.CHEST"),
        ("volume:\n  slices: 0\n", "slices"),
        ("volume:\n  coverage: 1.5\n", "coverage"),
        ("mr:\n  percentiles: [99.5, 0.5]\n", "percentiles"),
        ("padding: grey\n", "padding"),
        ("projection:\n  use_header_window: maybe\n", "use_header_window"),
        ("ct: [lung]\n", "ct"),
    ],
)
def test_settings_errors_name_the_file_and_the_key(tmp_path, text, named):
    path = tmp_path / "preprocessing.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(PreprocessingConfigError) as error:
        load_preprocessing_settings(path)
    assert str(path) in str(error.value)
    assert named in str(error.value)


def test_partial_settings_keep_the_defaults_for_missing_keys(tmp_path):
    path = tmp_path / "preprocessing.yaml"
    path.write_text("volume:\n  slices: 5\nct:\n  channel_windows: [lung, soft_tissue, bone]\n", encoding="utf-8")
    settings = load_preprocessing_settings(path)
    assert settings.volume == VolumeSettings(slices=5, coverage=0.8)
    assert settings.ct.channel_windows == ("lung", "soft_tissue", "bone")
    assert settings.ct.presets == CtSettings().presets
    assert settings.mr == MrSettings()


# --------------------------------------------------------------------------- CT


def test_ct_hounsfield_units_use_rescale_slope_and_intercept(tmp_path):
    # Soft tissue window W400/L40: -160 HU → 0, 40 HU → 0.5, 240 HU (upper limit) → 1.
    hu = bands([240.0, 40.0, -160.0])
    path = write_ct(tmp_path / "ct.dcm", hu, slope=2.0, intercept=-1000.0, BodyPartExamined="ABDOMEN")
    result = prepare_series(select_files(path), PreprocessingSettings(), MEAN, STD)

    assert result.tensors.shape == (1, 3, 224, 224)
    assert result.tensors.dtype == np.float32
    upper, middle, lower = (result.tensors[0, :, 112, c] for c in band_centres(3))
    np.testing.assert_allclose(upper, normalised(1.0), atol=1e-5)
    np.testing.assert_allclose(middle, normalised(0.5), atol=1e-5)
    np.testing.assert_allclose(lower, normalised(0.0), atol=1e-5)
    assert "soft tissue window (W400/L40 HU)" in result.method
    assert "ABDOMEN" in result.method


@pytest.mark.parametrize(
    "body_part, preset_words, expected",
    [
        # expected grey levels of the -225 HU and 60 HU bands
        ("CHEST", "lung window (W1500/L-600 HU)", (0.75, 0.94)),
        ("HEAD", "brain window (W80/L40 HU)", (0.0, 0.75)),
        ("PELVIS", "soft tissue window (W400/L40 HU)", (0.0, 0.55)),
        (None, "default soft tissue window (W400/L40 HU)", (0.0, 0.55)),
    ],
)
def test_ct_window_is_chosen_by_body_part_examined(tmp_path, body_part, preset_words, expected):
    path = write_ct(tmp_path / "ct.dcm", bands([-225.0, 60.0]), BodyPartExamined=body_part)
    result = prepare_series(select_files(path), PreprocessingSettings(), MEAN, STD)
    image = unit_image(result.tensors[0])
    for column, grey in zip(band_centres(2), expected):
        np.testing.assert_allclose(image[112, column], [grey] * 3, atol=1e-5)
    assert preset_words in result.method


def test_ct_window_set_in_configuration_overrides_body_part(tmp_path):
    path = write_ct(tmp_path / "ct.dcm", bands([-225.0, 60.0]), BodyPartExamined="HEAD")
    settings = PreprocessingSettings(ct=replace(CtSettings(), window="lung"))
    image = unit_image(prepare_series(select_files(path), settings, MEAN, STD).tensors[0])
    np.testing.assert_allclose(image[112, band_centres(2)[0]], [0.75] * 3, atol=1e-5)


def test_ct_three_windows_fill_the_three_channels(tmp_path):
    path = write_ct(tmp_path / "ct.dcm", bands([60.0]))
    settings = PreprocessingSettings(ct=replace(CtSettings(), channel_windows=("lung", "soft_tissue", "bone")))
    result = prepare_series(select_files(path), settings, MEAN, STD)
    # 60 HU: lung (60+1350)/1500, soft tissue (60+160)/400, bone (60+500)/1800
    np.testing.assert_allclose(unit_image(result.tensors[0])[112, 112], [1410 / 1500, 220 / 400, 560 / 1800], atol=1e-5)
    assert "three windows" in result.method
    assert "grey copied" not in result.method


def _volume(tmp_path: Path, count: int, with_positions: bool) -> tuple[list[InstanceFile], list[str]]:
    """`count` CT slices written in shuffled order; returns instances and their UIDs in head-to-foot order.

    Slice k lies at z = 2.5·k and holds -100 + 20·k HU, so a tensor says which slice it came from.
    Instance numbers run opposite to position, so ordering by position and by number differ.
    """
    rng = np.random.default_rng(7)
    instances, uids_by_position = [], []
    for k in rng.permutation(count):
        path = write_ct(
            tmp_path / f"slice{k:03d}.dcm", marked(np.full((32, 32), -100.0 + 20 * int(k))),
            ImagePositionPatient=[0.0, 0.0, 2.5 * int(k)], InstanceNumber=count - int(k),
        )
        instances.append(instance_for(path, slice_position=2.5 * int(k) if with_positions else None))
    for k in range(count):
        uids_by_position.append(next(i.sop_instance_uid for i in instances if i.path.name == f"slice{k:03d}.dcm"))
    return instances, uids_by_position


def test_ct_volume_reads_only_the_representative_slices_in_position_order(tmp_path, monkeypatch):
    instances, uids = _volume(tmp_path, 10, with_positions=True)
    read = []
    original = pixel_data.read_pixels
    monkeypatch.setattr(pixel_data, "read_pixels", lambda instance: read.append(instance.path) or original(instance))

    result = prepare_series(selected(*instances), PreprocessingSettings(), MEAN, STD)

    # 3 slices evenly over the middle 80% of 10: positions 0.9, 4.5, 8.1 → slices 1, 5, 8.
    assert [s.sop_instance_uid for s in result.sources] == [uids[1], uids[5], uids[8]]
    assert all(s.frame is None for s in result.sources)
    assert len(read) == 3
    greys = [unit_image(t)[112, 112, 0] for t in result.tensors]
    np.testing.assert_allclose(greys, [((-100 + 20 * k) + 160) / 400 for k in (1, 5, 8)], atol=1e-5)
    assert "3 of 10 slices" in result.method and "middle 80%" in result.method and "slice position" in result.method


def test_ct_volume_without_positions_falls_back_to_instance_number(tmp_path):
    instances, uids = _volume(tmp_path, 10, with_positions=False)
    settings = PreprocessingSettings(volume=VolumeSettings(slices=2, coverage=1.0))
    result = prepare_series(selected(*instances), settings, MEAN, STD)
    # Instance numbers run foot to head (slice k has number 10 - k): first and last by number.
    assert [s.sop_instance_uid for s in result.sources] == [uids[9], uids[0]]
    assert "instance number order" in result.method


def test_enhanced_multiframe_ct_uses_per_frame_rescale_and_samples_frames_as_slices(tmp_path):
    # Five frames store different values but per-frame intercepts make every frame 40 HU.
    intercepts = [-1024.0, -1000.0, -900.0, -800.0, -700.0]
    stored = np.stack([marked(np.full((32, 32), 40.0 - b)) for b in intercepts]).astype(np.int16)
    path = write_derived(tmp_path / "enhanced.dcm", "CT_small.dcm", stored, RescaleSlope=None, RescaleIntercept=None)
    ds = pydicom.dcmread(path)
    shared = Dataset()
    shared.PixelValueTransformationSequence = Sequence([Dataset()])
    shared.PixelValueTransformationSequence[0].RescaleSlope = 1
    shared.PixelValueTransformationSequence[0].RescaleIntercept = 0
    shared.PixelValueTransformationSequence[0].RescaleType = "HU"
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    frames = []
    for intercept in intercepts:
        group, item = Dataset(), Dataset()
        item.RescaleSlope, item.RescaleIntercept, item.RescaleType = 1, intercept, "HU"
        group.PixelValueTransformationSequence = Sequence([item])
        frames.append(group)
    ds.PerFrameFunctionalGroupsSequence = Sequence(frames)
    ds.save_as(path, enforce_file_format=True)

    assert float(frame_pipeline(ds, 3).RescaleIntercept) == -800.0
    assert "RescaleIntercept" not in ds  # the view does not alter the dataset

    result = prepare_series(select_files(path), PreprocessingSettings(), MEAN, STD)
    # 3 of 5 frames over the middle 80%: positions 0.4, 2.0, 3.6 → frames 1, 3, 5.
    assert [s.frame for s in result.sources] == [1, 3, 5]
    for tensor in result.tensors:
        np.testing.assert_allclose(unit_image(tensor)[112, 112], [0.5] * 3, atol=1e-5)
    assert "frames 1, 3, 5 of the 5 frames" in result.method


def test_compressed_ct_jpeg2000_decodes_and_is_windowed():
    result = prepare_series(select_files(bundled("693_J2KI.dcm")), PreprocessingSettings(), MEAN, STD)
    assert result.tensors.shape == (1, 3, 224, 224)
    image = unit_image(result.tensors[0])
    assert image.min() >= -1e-5 and image.max() <= 1 + 1e-5
    assert image.std() > 0.1  # a real slice, not a blank or saturated image


# --------------------------------------------------------------------------- MR


def test_mr_is_scaled_between_robust_percentiles_per_image(tmp_path):
    original = prepare_series(select_files(bundled("MR_small.dcm")), PreprocessingSettings(), MEAN, STD)
    image = unit_image(original.tensors[0])
    assert original.tensors.shape == (1, 3, 224, 224)
    np.testing.assert_allclose(image[..., 0], image[..., 1], atol=1e-5)
    np.testing.assert_allclose(image[..., 0], image[..., 2], atol=1e-5)
    assert image.min() == pytest.approx(0.0, abs=1e-5) and image.max() == pytest.approx(1.0, abs=1e-5)
    # The 0.5–99.5 percentiles clip a small share of the brightest pixels to 1, not half the image.
    assert 0.0 < np.mean(image[..., 0] > 0.999) < 0.05

    # Per-image scaling: the same anatomy at twice the signal plus an offset looks the same.
    stored = pydicom.dcmread(bundled("MR_small.dcm")).pixel_array.astype(np.int32) * 2 + 100
    brighter = write_derived(tmp_path / "mr.dcm", "MR_small.dcm", stored.astype(np.int16))
    scaled = prepare_series(select_files(brighter), PreprocessingSettings(), MEAN, STD)
    np.testing.assert_allclose(scaled.tensors, original.tensors, atol=1e-4)
    assert "0.5th and 99.5th percentiles" in original.method


@pytest.mark.parametrize("name", ["MR_small_RLE.dcm", "MR_small_jp2klossless.dcm", "MR_small_jpeg_ls_lossless.dcm"])
def test_losslessly_compressed_mr_gives_the_same_tensor_as_uncompressed(name):
    reference = prepare_series(select_files(bundled("MR_small.dcm")), PreprocessingSettings(), MEAN, STD)
    compressed = prepare_series(select_files(bundled(name)), PreprocessingSettings(), MEAN, STD)
    np.testing.assert_array_equal(compressed.tensors, reference.tensors)


# --------------------------------------------------------------------------- CR / DX


def test_dx_header_window_and_monochrome1_inversion(tmp_path):
    # Window W1000/L2048 (DICOM linear): 2547 is its upper limit, 1548 its lower limit.
    stored = bands([2547, 2048, 1548, 4000])
    window = {"WindowCenter": 2048, "WindowWidth": 1000}
    mono2 = write_dx(tmp_path / "m2.dcm", stored, "MONOCHROME2", **window)
    mono1 = write_dx(tmp_path / "m1.dcm", stored, "MONOCHROME1", **window)

    two = prepare_series(select_files(mono2), PreprocessingSettings(), MEAN, STD)
    one = prepare_series(select_files(mono1), PreprocessingSettings(), MEAN, STD)

    upper, centre, lower, above = (two.tensors[0, :, 112, c] for c in band_centres(4))
    np.testing.assert_allclose(upper, normalised(1.0), atol=1e-5)
    # DICOM linear window: ((x - (c - 0.5)) / (w - 1) + 0.5), so the centre value is just above 0.5.
    np.testing.assert_allclose(centre, normalised(0.5 + 0.5 / 999), atol=1e-5)
    np.testing.assert_allclose(lower, normalised(0.0), atol=1e-5)
    np.testing.assert_allclose(above, normalised(1.0), atol=1e-5)
    # Same data as MONOCHROME1: bright and dark swap everywhere.
    np.testing.assert_allclose(unit_image(one.tensors[0]), 1.0 - unit_image(two.tensors[0]), atol=1e-5)
    assert "window from the image header (W1000/L2048)" in two.method
    assert "MONOCHROME1 inverted" in one.method and "MONOCHROME1" not in two.method


def test_dx_without_window_falls_back_to_percentiles(tmp_path):
    stored = bands([100, 600, 1100, 1600])
    path = write_dx(tmp_path / "dx.dcm", stored, "MONOCHROME1", WindowCenter=None, WindowWidth=None)
    settings = PreprocessingSettings(projection=ProjectionSettings(fallback_percentiles=(0.0, 100.0)))
    result = prepare_series(select_files(path), settings, MEAN, STD)
    greys = [unit_image(result.tensors[0])[112, c, 0] for c in band_centres(4)]
    # min → 0 and max → 1, then MONOCHROME1 inverted: the lowest value is the brightest.
    np.testing.assert_allclose(greys, [1.0, 2 / 3, 1 / 3, 0.0], atol=1e-5)
    assert "minimum and maximum" in result.method and "no window in the header" in result.method


def test_dx_voi_lut_sequence_from_the_header_is_applied(tmp_path):
    stored = bands([0, 64, 255], rows=64, cols=96)
    path = write_dx(tmp_path / "dx.dcm", stored, "MONOCHROME2", WindowCenter=None, WindowWidth=None)
    ds = pydicom.dcmread(path)
    lut = Dataset()
    lut.LUTDescriptor = [256, 0, 8]
    lut.add_new("LUTData", "US", list(range(255, -1, -1)))  # a LUT that reverses the values
    ds.VOILUTSequence = Sequence([lut])
    ds.save_as(path, enforce_file_format=True)

    result = prepare_series(select_files(path), PreprocessingSettings(), MEAN, STD)
    image = unit_image(result.tensors[0])
    # 96×64 → 224×149: 37 padding rows above, image rows 37..185.
    greys = [image[112, c, 0] for c in band_centres(3)]
    np.testing.assert_allclose(greys, [1.0, 191 / 255, 0.0], atol=1e-5)
    assert "VOI LUT from the image header" in result.method


# --------------------------------------------------------------------------- geometry and colour


def test_wide_colour_image_keeps_its_aspect_ratio_with_mean_padding():
    result = prepare_series(select_files(bundled("examples_rgb_color.dcm")), PreprocessingSettings(), MEAN, STD)
    tensor = result.tensors[0]  # 240×320: 320 columns → 224, so 240 rows → 168, 28 padding rows above and below
    np.testing.assert_allclose(tensor[:, :28, :], 0.0, atol=1e-6)  # the mean colour normalises to 0
    np.testing.assert_allclose(tensor[:, 196:, :], 0.0, atol=1e-6)
    assert np.abs(tensor[:, 28, :]).max() > 0.5 and np.abs(tensor[:, 195, :]).max() > 0.5
    assert "padded to 224×224 with the model's mean colour" in result.method


@pytest.mark.parametrize("padding, pad", [("mean", MEAN), ("black", (0.0, 0.0, 0.0))])
def test_padding_rows_hold_the_configured_pad_value(tmp_path, padding, pad):
    # A uniform mid-grey 64×96 image (header window maps 2048 to 0.5005): 96 → 224 columns,
    # 64 → 149 rows, centred with 37 padding rows above and 38 below.
    path = write_dx(tmp_path / "wide.dcm", marked(np.full((64, 96), 2048)), "MONOCHROME2", WindowCenter=2048, WindowWidth=1000)
    result = prepare_series(select_files(path), PreprocessingSettings(padding=padding), MEAN, STD)
    image = unit_image(result.tensors[0])
    np.testing.assert_allclose(image[:37], np.broadcast_to(pad, image[:37].shape), atol=1e-5)
    np.testing.assert_allclose(image[186:], np.broadcast_to(pad, image[186:].shape), atol=1e-5)
    np.testing.assert_allclose(image[40:186, 8:], 0.5 + 0.5 / 999, atol=1e-5)  # away from the marked corner


@pytest.mark.parametrize("name", ["JPEG2000.dcm", "JPGExtended.dcm"])  # NM 1024×256: JPEG 2000, JPEG extended 12-bit
def test_tall_image_is_padded_left_and_right(name):
    result = prepare_series(select_files(bundled(name)), PreprocessingSettings(), MEAN, STD)
    tensor = result.tensors[0]
    # 1024 rows → 224, so 256 columns → 56, centred: columns 84..139 hold the image.
    np.testing.assert_allclose(tensor[:, :, :84], 0.0, atol=1e-6)
    np.testing.assert_allclose(tensor[:, :, 140:], 0.0, atol=1e-6)
    assert np.abs(tensor[:, :, 84:140]).max() > 0.5
    assert "NM series" in result.method


def test_fit_and_pad_keeps_a_square_inside_a_wide_image():
    image = np.zeros((50, 100, 3), dtype=np.float32)
    image[:, 25:75] = 1.0  # a 50×50 white square in the middle
    square = fit_and_pad(image, 224, (0.5, 0.5, 0.5))
    white = np.argwhere(square[..., 0] > 0.5)
    height = white[:, 0].max() - white[:, 0].min() + 1
    width = white[:, 1].max() - white[:, 1].min() + 1
    assert abs(height - width) <= 1
    assert height == pytest.approx(112, abs=2)
    assert np.all(square[:56, :, :] == 0.5) and np.all(square[168:, :, :] == 0.5)


@pytest.mark.parametrize(
    "name, tolerance",
    [
        ("SC_rgb_dcmtk_+eb+cy+n1.dcm", 0.02),  # YBR_FULL, JPEG baseline
        ("SC_rgb_dcmtk_+eb+cy+np.dcm", 0.02),  # YBR_FULL_422, JPEG baseline
        ("SC_rgb_jpeg_dcmtk.dcm", 0.02),  # YBR_FULL, JPEG baseline
        ("SC_ybr_full_422_uncompressed.dcm", 0.02),  # YBR_FULL_422, uncompressed
        ("SC_rgb_jpeg_gdcm.dcm", 1e-6),  # RGB, JPEG lossless
        ("SC_rgb_gdcm_KY.dcm", 1e-6),  # RGB, JPEG 2000
        ("SC_rgb_rle_16bit.dcm", 1e-6),  # RGB 16 bits, RLE
    ],
)
def test_colour_files_decode_to_the_colours_of_the_lossless_rgb_twin(name, tolerance):
    reference = prepare_series(select_files(bundled("SC_rgb_rle.dcm")), PreprocessingSettings(), MEAN, STD)
    result = prepare_series(select_files(bundled(name)), PreprocessingSettings(), MEAN, STD)
    difference = np.abs(unit_image(result.tensors[0]) - unit_image(reference.tensors[0])).mean()
    assert difference < tolerance
    # The twin holds saturated colours: red, green and blue differ in the prepared image.
    reference_image = unit_image(reference.tensors[0])
    assert np.abs(reference_image[..., 0] - reference_image[..., 1]).max() > 0.9
    assert "colour" in result.method and "grey copied" not in result.method


def test_palette_colour_image_is_prepared_in_colour():
    result = prepare_series(select_files(bundled("examples_palette.dcm")), PreprocessingSettings(), MEAN, STD)
    image = unit_image(result.tensors[0])
    assert result.tensors.shape == (1, 3, 224, 224)
    assert np.abs(image[..., 0] - image[..., 2]).max() > 0.2
    assert "palette colour" in result.method


# --------------------------------------------------------------------------- multi-frame


@pytest.mark.parametrize(
    "max_frames, frames",
    [(4, [1, 11, 20, 30]), (1, [15]), (50, list(range(1, 31)))],
)
def test_multiframe_cine_frames_are_sampled_evenly_with_one_based_numbers(max_frames, frames):
    settings = PreprocessingSettings(multiframe=MultiframeSettings(max_frames=max_frames))
    path = bundled("examples_ybr_color.dcm")  # US, 30 frames, YBR_FULL_422 JPEG baseline
    result = prepare_series(select_files(path), settings, MEAN, STD)
    assert result.tensors.shape == (len(frames), 3, 224, 224)
    assert [s.frame for s in result.sources] == frames
    uid = pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID
    assert {s.sop_instance_uid for s in result.sources} == {uid}
    if len(frames) > 1:
        assert not np.allclose(result.tensors[0], result.tensors[-1])


def test_sample_indices_are_even_and_unique():
    assert sample_indices(101, 3, 0.8) == [10, 50, 90]
    assert sample_indices(2, 3, 0.8) == [0, 1]
    assert sample_indices(7, 1, 0.8) == [3]
    assert sample_indices(0, 3) == []


def test_series_of_images_is_capped_at_max_instances(tmp_path):
    paths = [
        write_dx(tmp_path / f"dx{i}.dcm", bands([100 * i + 100]), "MONOCHROME2", InstanceNumber=i + 1) for i in range(5)
    ]
    settings = PreprocessingSettings(max_instances=3)
    result = prepare_series(select_files(*paths), settings, MEAN, STD)
    chosen = [pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID for p in (paths[0], paths[2], paths[4])]
    assert [s.sop_instance_uid for s in result.sources] == chosen
    assert "3 of 5 instances" in result.method


# --------------------------------------------------------------------------- bad data


def test_one_by_one_image_is_refused_naming_the_file(tmp_path):
    path = write_dx(tmp_path / "tiny.dcm", np.array([[7]]), "MONOCHROME2")
    with pytest.raises(PreprocessingError) as error:
        prepare_series(select_files(path), PreprocessingSettings(), MEAN, STD)
    assert "tiny.dcm" in str(error.value) and "1×1 pixels" in str(error.value)


def test_four_samples_per_pixel_is_refused_naming_the_file(tmp_path):
    path = write_derived(
        tmp_path / "cmyk.dcm", "CT_small.dcm", np.zeros((16, 16, 4), np.uint8).reshape(16, 64),
        Columns=16, SamplesPerPixel=4, PhotometricInterpretation="CMYK", PlanarConfiguration=0,
        BitsAllocated=8, BitsStored=8, HighBit=7, PixelRepresentation=0,
    )
    with pytest.raises(PreprocessingError) as error:
        prepare_series(select_files(path), PreprocessingSettings(), MEAN, STD)
    assert "cmyk.dcm" in str(error.value) and "Samples per Pixel" in str(error.value)


def test_float_pixel_data_is_refused_naming_the_file(tmp_path):
    ds = pydicom.dcmread(bundled("CT_small.dcm"))
    del ds.PixelData
    for keyword in ("BitsStored", "HighBit", "PixelRepresentation", "RescaleSlope", "RescaleIntercept"):
        delattr(ds, keyword)
    ds.Rows = ds.Columns = 16
    ds.BitsAllocated = 32
    ds.FloatPixelData = np.ones((16, 16), np.float32).tobytes()
    path = tmp_path / "float.dcm"
    ds.save_as(path, enforce_file_format=True)
    with pytest.raises(PreprocessingError) as error:
        prepare_series(select_files(path), PreprocessingSettings(), MEAN, STD)
    assert "float.dcm" in str(error.value) and "floating-point pixel data" in str(error.value)


def test_unreadable_slice_is_left_out_with_one_log_line(tmp_path, caplog):
    instances, uids = _volume(tmp_path, 3, with_positions=True)
    broken = next(i for i in instances if i.sop_instance_uid == uids[1])
    broken.path.write_bytes(broken.path.read_bytes()[:400])  # truncated before the pixel data

    with caplog.at_level(logging.WARNING, logger="biomedclip_map.preprocessing"):
        result = prepare_series(selected(*instances), PreprocessingSettings(), MEAN, STD, study_ref="st-0123456789ab")

    assert [s.sop_instance_uid for s in result.sources] == [uids[0], uids[2]]
    assert result.tensors.shape == (2, 3, 224, 224)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert broken.path.name in warnings[0].getMessage() and "st-0123456789ab" in warnings[0].getMessage()
    assert broken.sop_instance_uid not in warnings[0].getMessage()
    assert "1 selected instance could not be used (pixel data that could not be read or decoded) and was left out" in result.method


def test_series_fails_when_no_selected_instance_can_be_prepared(tmp_path):
    path = write_ct(tmp_path / "ct.dcm", bands([0.0]))
    series = select_files(path)  # headers are read first, as the loader does
    path.write_bytes(path.read_bytes()[:400])
    with pytest.raises(PreprocessingError) as error:
        prepare_series(series, PreprocessingSettings(), MEAN, STD)
    assert "ct.dcm" in str(error.value) and "could not be prepared" in str(error.value)


def test_invalid_model_normalisation_is_refused(tmp_path):
    path = write_ct(tmp_path / "ct.dcm", bands([0.0]))
    with pytest.raises(ValueError, match="std"):
        prepare_series(select_files(path), PreprocessingSettings(), MEAN, (0.3, 0.0, 0.3))
