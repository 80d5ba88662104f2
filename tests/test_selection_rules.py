"""Tests of series selection (`operators.dicom_input.selection_rules`), including parity with the SDK's selector."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from pydicom.uid import generate_uid

from operators.dicom_input.dicom_scan import scan_input
from operators.messages import InstanceFile, SeriesHeader, StudyHeader
from operators.dicom_input.selection_rules import (
    SelectionRulesError,
    load_selection_rules,
    parse_selection_rules,
    select_series,
    series_attribute,
)
from tests.fixtures_dicom import AXIAL, CORONAL, SAGITTAL, image_dataset, write_series

DEFAULT_RULES = Path(__file__).resolve().parents[1] / "app" / "config" / "selection_rules.json"


def study_of(*headers) -> StudyHeader:
    """An in-memory study whose series have the given headers (one instance each)."""
    study_uid = generate_uid()
    series = []
    for ds in headers:
        ds.StudyInstanceUID = study_uid
        instance = InstanceFile(
            path=Path(f"{ds.SeriesInstanceUID}.dcm"),
            sop_class_uid=ds.SOPClassUID,
            sop_instance_uid=ds.SOPInstanceUID,
            transfer_syntax_uid=ds.file_meta.TransferSyntaxUID,
        )
        series.append(SeriesHeader(series_instance_uid=ds.SeriesInstanceUID, header=ds, instances=[instance]))
    return StudyHeader(study_instance_uid=study_uid, ref="st-000000000000", header=headers[0], series=series)


def rules_of(*selections: dict) -> object:
    return parse_selection_rules({"selections": list(selections)}, source="test rules")


def picked(selection) -> list[tuple[str, str]]:
    """(selection name, series UID) pairs, in output order."""
    return [(s.selection_name, s.series.series_instance_uid) for s in selection.selected]


# --------------------------------------------------------------------------- the default rules


@pytest.fixture(scope="module")
def default_rules():
    return load_selection_rules(DEFAULT_RULES)


DEFAULT_CASES = {
    "XC RGB photograph": (dict(modality="XC", rgb=True), "burn_photograph"),
    "DMS YBR photograph": (dict(modality="DMS", rgb=True, PhotometricInterpretation="YBR_FULL"), "burn_photograph"),
    "OT greyscale without SKIN": (dict(modality="OT"), None),
    "OT greyscale of SKIN": (dict(modality="OT", BodyPartExamined="SKIN"), "burn_photograph"),
    "CR chest": (dict(modality="CR", BodyPartExamined="CHEST"), "chest_radiograph"),
    "DX thorax": (dict(modality="DX", BodyPartExamined="THORAX"), "chest_radiograph"),
    "DX knee": (dict(modality="DX", BodyPartExamined="KNEE"), None),
    "CR without body part": (dict(modality="CR"), None),
    "CT axial": (dict(modality="CT", ImageType=["ORIGINAL", "PRIMARY", "AXIAL"]), "ct"),
    "CT localizer": (dict(modality="CT", ImageType=["ORIGINAL", "PRIMARY", "LOCALIZER"]), None),
    "CT without ImageType": (dict(modality="CT"), "ct"),  # an absent optional attribute never excludes a series
    "MR": (dict(modality="MR", ImageType=["ORIGINAL", "PRIMARY", "M", "ND"]), "mr"),
    "MR localizer": (dict(modality="MR", ImageType=["ORIGINAL", "PRIMARY", "LOCALIZER"]), None),
}


@pytest.mark.parametrize("case", sorted(DEFAULT_CASES))
def test_default_rules(case, default_rules):
    attributes, expected = DEFAULT_CASES[case]
    study = study_of(image_dataset(**attributes))
    names = [s.selection_name for s in select_series(study, default_rules).selected]
    assert names == ([expected] if expected else [])


def test_default_rules_load_with_their_names(default_rules):
    assert default_rules.names == ["burn_photograph", "chest_radiograph", "ct", "mr"]
    assert default_rules.source == str(DEFAULT_RULES)


# --------------------------------------------------------------------------- semantics


def test_text_is_case_insensitive_equality_or_regex_search():
    study = study_of(image_dataset(modality="CT", SeriesDescription="Thorax w/o contrast 5mm"))
    assert picked(select_series(study, rules_of({"name": "a", "conditions": {"Modality": "ct"}})))
    assert picked(select_series(study, rules_of({"name": "a", "conditions": {"SeriesDescription": "w/o CONTRAST"}})))
    assert not picked(select_series(study, rules_of({"name": "a", "conditions": {"SeriesDescription": "^contrast"}})))


@pytest.mark.parametrize(
    ("condition", "expected"),
    [
        (5, True), (5.0, True), (4, False),
        ([3, 5], True), ([5.5, 10], False),
        ([4, ">"], True), ([5, ">"], False), ([5, ">="], True), ([6, "<"], True),
        ([5, "<="], True), ([5, "!="], False), (["4.5", ">"], True),
        ("5(\\.0+)?", True), ("5", False),  # regex full match on the value as written ("5.00")
    ],
)
def test_numeric_conditions(condition, expected):
    study = study_of(image_dataset(SliceThickness="5.00"))
    rules = rules_of({"name": "a", "conditions": {"SliceThickness": condition}})
    assert bool(picked(select_series(study, rules))) is expected


@pytest.mark.parametrize(
    ("condition", "expected"),
    [
        (["PRIMARY", "AXIAL"], True), (["primary", "!localizer"], True), (["PRIMARY", "!AXIAL"], False),
        (["SECONDARY"], False), ("AXIAL", True), ("AX", True), ("!AXIAL", False), ("!SECONDARY", True),
    ],
)
def test_multi_valued_include_and_exclude_terms(condition, expected):
    study = study_of(image_dataset(ImageType=["ORIGINAL", "PRIMARY", "AXIAL"]))
    rules = rules_of({"name": "a", "conditions": {"ImageType": condition}})
    assert bool(picked(select_series(study, rules))) is expected


def test_single_valued_image_type_takes_list_conditions():
    study = study_of(image_dataset(ImageType="DERIVED"))
    select = lambda conditions: picked(  # noqa: E731 - matching semantics only: the originals-only policy off
        select_series(study, rules_of({"name": "a", "conditions": conditions}), originals_only=False)
    )
    assert select({"ImageType": ["!LOCALIZER"]})
    assert not select({"ImageType": ["!DERIVED"]})


@pytest.mark.parametrize(
    ("orientation", "condition", "expected"),
    [
        (AXIAL, "Axial", True), (AXIAL, " axial ", True), (AXIAL, "Coronal", False),
        (CORONAL, "Coronal", True), (SAGITTAL, "Sagittal", True), (SAGITTAL, "Axial", False),
    ],
)
def test_image_orientation(orientation, condition, expected):
    study = study_of(image_dataset(modality="MR", ImageOrientationPatient=orientation, PatientPosition="HFS"))
    rules = rules_of({"name": "a", "conditions": {"ImageOrientationPatient": condition}})
    assert bool(picked(select_series(study, rules))) is expected


def test_orientation_without_patient_position_does_not_match_and_is_logged(caplog):
    study = study_of(image_dataset(ImageOrientationPatient=AXIAL))
    rules = rules_of({"name": "a", "conditions": {"ImageOrientationPatient": "Axial"}})
    assert not picked(select_series(study, rules))
    assert "no PatientPosition" in caplog.text and "st-000000000000" in caplog.text


def test_missing_attribute_and_zero_do_not_match_but_empty_conditions_are_ignored():
    study = study_of(image_dataset(modality="CT", SeriesNumber=0))
    for conditions in ({"BodyPartExamined": "CHEST"}, {"SeriesNumber": "0"}):
        assert not picked(select_series(study, rules_of({"name": "a", "conditions": conditions})))
    ignored = {"Modality": "CT", "BodyPartExamined": None, "SliceThickness": 0, "ImageType": []}
    assert picked(select_series(study, rules_of({"name": "a", "conditions": ignored})))


def test_sdk_derived_properties():
    study = study_of(image_dataset(PixelSpacing=[0.7, 0.8], ImageOrientationPatient=CORONAL))
    for conditions in (
        {"row_pixel_spacing": [0.6, 0.75], "col_pixel_spacing": [0.8, ">="]},
        {"col_direction_cosine": "-1.0", "row_direction_cosine": ["1.0"]},
    ):
        assert picked(select_series(study, rules_of({"name": "a", "conditions": conditions})))


def test_person_names_and_series_numbers():
    study = study_of(image_dataset(ReferringPhysicianName="Doe^Jane", SeriesNumber="12"))
    rules = rules_of({"name": "a", "conditions": {"ReferringPhysicianName": "^doe", "SeriesNumber": "1\\d"}})
    assert picked(select_series(study, rules))


def test_same_name_entries_are_alternatives_and_select_a_series_once():
    xc = image_dataset(modality="XC", rgb=True, BodyPartExamined="SKIN")  # matches both entries
    skin = image_dataset(modality="OT", BodyPartExamined="SKIN")
    study = study_of(skin, xc)
    rules = rules_of(
        {"name": "burn", "conditions": {"Modality": "XC"}},
        {"name": "burn", "conditions": {"BodyPartExamined": "SKIN"}},
    )
    assert picked(select_series(study, rules)) == [
        ("burn", skin.SeriesInstanceUID),
        ("burn", xc.SeriesInstanceUID),
    ]


def test_a_series_matched_by_two_names_goes_to_the_first_in_file_order():
    ct = image_dataset(modality="CT", BodyPartExamined="CHEST")
    study = study_of(ct)
    rules = rules_of(
        {"name": "chest", "conditions": {"BodyPartExamined": "CHEST"}},
        {"name": "ct", "conditions": {"Modality": "CT"}},
    )
    assert picked(select_series(study, rules)) == [("chest", ct.SeriesInstanceUID)]


def test_first_match_only_picks_one_series_per_name():
    first, second = image_dataset(modality="CT"), image_dataset(modality="CT")
    study = study_of(first, second)
    rules = rules_of({"name": "ct", "conditions": {"Modality": "CT"}})
    assert picked(select_series(study, rules, all_matched=False)) == [("ct", first.SeriesInstanceUID)]
    assert len(picked(select_series(study, rules))) == 2


def test_a_sequence_attribute_is_a_rule_error_naming_the_key():
    ds = image_dataset()
    ds.ReferencedImageSequence = [image_dataset()]
    rules = rules_of({"name": "a", "conditions": {"ReferencedImageSequence": "x"}})
    with pytest.raises(SelectionRulesError, match=r"selections\[0\] \('a'\), condition 'ReferencedImageSequence'"):
        select_series(study_of(ds), rules)


def test_attribute_values_as_rules_see_them():
    series = study_of(image_dataset(ImageType=["ORIGINAL", "PRIMARY"], SliceThickness="2.50", SeriesNumber="3")).series[0]
    assert series_attribute(series, "ImageType") == ["ORIGINAL", "PRIMARY"]
    assert series_attribute(series, "SliceThickness") == 2.5
    assert str(series_attribute(series, "SliceThickness")) == "2.50"
    assert series_attribute(series, "SeriesNumber") == 3 and type(series_attribute(series, "SeriesNumber")) is int
    assert series_attribute(series, "BodyPartExamined") is None


# --------------------------------------------------------------------------- loading errors


def write_rules(tmp_path: Path, data: object) -> Path:
    path = tmp_path / "rules.json"
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ("{not json", "not valid JSON"),
        ('{"selections": [{"name": "a", "name": "b", "conditions": {}}]}', "key 'name' appears twice"),
        ({"rules": []}, '"selections" list'),
        ({"selections": []}, "non-empty list"),
        ({"selections": ["ct"]}, r"selections\[0\] must be an object"),
        ({"selections": [{"conditions": {"Modality": "CT"}}]}, r'selections\[0\] needs a non-empty "name"'),
        ({"selections": [{"name": "a", "condition": {}}]}, r"selections\[0\] has unknown key\(s\) 'condition'"),
        ({"selections": [{"name": "a", "conditions": ["CT"]}]}, r"selections\[0\] \('a'\): \"conditions\" must be"),
        (
            {"selections": [{"name": "a", "conditions": {}}, {"name": "b", "conditions": {"Modaltiy": "CT"}}]},
            r"selections\[1\] \('b'\), condition 'Modaltiy': not a DICOM attribute keyword",
        ),
        ({"selections": [{"name": "a", "conditions": {"Modality": "(CT"}}]}, "'Modality': '\\(CT' is not a valid regular"),
        ({"selections": [{"name": "a", "conditions": {"Modality": True}}]}, "'Modality': the value must be"),
        ({"selections": [{"name": "a", "conditions": {"Modality": {"is": "CT"}}}]}, "'Modality': the value must be"),
        ({"selections": [{"name": "a", "conditions": {"Modality": 5}}]}, "'Modality': the attribute is text"),
        ({"selections": [{"name": "a", "conditions": {"SliceThickness": [2, "=>"]}}]}, "unsupported operator '=>'"),
        ({"selections": [{"name": "a", "conditions": {"SliceThickness": [1, 2, 3]}}]}, r"\[min, max\] or \[value"),
        ({"selections": [{"name": "a", "conditions": {"ImageOrientationPatient": "Oblique"}}]}, "Axial, Coronal"),
        ({"selections": [{"name": "a", "conditions": {"depth_pixel_spacing": 1}}]}, "only known after the volume"),
    ],
)
def test_rules_file_errors_name_the_file_selection_and_key(tmp_path, data, message):
    path = write_rules(tmp_path, data)
    with pytest.raises(SelectionRulesError, match=message) as error:
        load_selection_rules(path)
    assert str(path) in str(error.value)


def test_missing_rules_file_is_named(tmp_path):
    with pytest.raises(SelectionRulesError, match="nowhere.json"):
        load_selection_rules(tmp_path / "nowhere.json")


def test_a_selection_without_conditions_selects_nothing_and_is_logged(tmp_path, caplog):
    caplog.set_level(logging.WARNING)
    rules = load_selection_rules(write_rules(tmp_path, {"selections": [{"name": "empty", "conditions": {}}]}))
    assert "selects nothing" in caplog.text
    assert not select_series(study_of(image_dataset()), rules).selected


# --------------------------------------------------------------------------- parity with the SDK

SDK_SAMPLE_RULES = {
    "selections": [
        {"name": "CT Series 1", "conditions": {"StudyDescription": "(?i)^Spleen", "Modality": "(?i)CT",
                                               "SeriesDescription": "(?i)^No series description|(.*?)"}},
        {"name": "CT Series 2", "conditions": {"Modality": "CT", "BodyPartExamined": "Abdomen",
                                               "SeriesDescription": "Not to be matched"}},
        {"name": "CT Series 3", "conditions": {"StudyDescription": "(.*?)", "Modality": "(?i)CT",
                                               "ImageType": ["PRIMARY", "ORIGINAL", "AXIAL"], "SliceThickness": [3, 5]}},
        {"name": "CT Series 4", "conditions": {"StudyDescription": "(.*?)", "Modality": "(?i)MR",
                                               "ImageOrientationPatient": "Axial", "SliceThickness": [2, ">"]}},
        {"name": "CT Series 5", "conditions": {"StudyDescription": "(.*?)", "Modality": "(?i)CT",
                                               "ImageType": ["PRIMARY", "!SECONDARY"]}},
    ]
}
PARITY_RULES = {
    "default rules": json.loads(DEFAULT_RULES.read_text()),
    "SDK sample rules": SDK_SAMPLE_RULES,
    "numbers": {"selections": [
        {"name": "thin", "conditions": {"SliceThickness": [0.5, 1.5]}},
        {"name": "long echo", "conditions": {"EchoTime": [50, ">="]}},
        {"name": "series 1x", "conditions": {"SeriesNumber": "1\\d"}},
        {"name": "exact", "conditions": {"SeriesNumber": 3}},
    ]},
    "orientation and spacing": {"selections": [
        {"name": "sagittal", "conditions": {"Modality": "MR", "ImageOrientationPatient": "Sagittal"}},
        {"name": "coronal", "conditions": {"Modality": "CT", "ImageOrientationPatient": "coronal"}},
        {"name": "fine", "conditions": {"row_pixel_spacing": [0.1, 0.6], "Laterality": "r"}},
    ]},
    "text and terms": {"selections": [
        {"name": "derived", "conditions": {"ImageType": "DERIVED"}},
        {"name": "head", "conditions": {"BodyPartExamined": "head", "StudyDescription": "spleen"}},
        {"name": "not primary", "conditions": {"ImageType": "!primary", "Modality": "CR|DX"}},
    ]},
}


@pytest.fixture(scope="module")
def parity_study(tmp_path_factory) -> Path:
    """Two studies on disk whose series exercise every kind of condition above."""
    root = tmp_path_factory.mktemp("parity")
    spleen, other = generate_uid(), generate_uid()
    common = {"StudyDescription": "Spleen CT abdomen"}
    write_series(root / "ct_axial", 3, study_uid=spleen, modality="CT", SeriesNumber=1, SliceThickness=5,
                 ImageType=["ORIGINAL", "PRIMARY", "AXIAL"], BodyPartExamined="ABDOMEN", **common)
    write_series(root / "ct_loc", 1, study_uid=spleen, modality="CT", SeriesNumber=2, SliceThickness=1,
                 ImageType=["ORIGINAL", "PRIMARY", "LOCALIZER"], ImageOrientationPatient=CORONAL, **common)
    write_series(root / "ct_mpr", 2, study_uid=spleen, modality="CT", SeriesNumber=3, SliceThickness=1,
                 ImageType=["DERIVED", "SECONDARY", "AXIAL"], PixelSpacing=[0.5, 0.5], Laterality="R", **common)
    write_series(root / "mr_sag", 2, study_uid=spleen, modality="MR", SeriesNumber=11, SliceThickness=3,
                 ImageType=["ORIGINAL", "PRIMARY", "M"], ImageOrientationPatient=SAGITTAL, EchoTime=12, **common)
    write_series(root / "mr_ax", 2, study_uid=spleen, modality="MR", SeriesNumber=12, SliceThickness=4,
                 ImageType=["ORIGINAL", "PRIMARY", "M"], EchoTime=90, BodyPartExamined="HEAD", **common)
    write_series(root / "cr", 1, study_uid=other, modality="CR", SeriesNumber=1, BodyPartExamined="CHEST",
                 ImageType=["DERIVED", "SECONDARY"], ImageOrientationPatient=None, ImagePositionPatient=None,
                 PatientPosition=None, StudyDescription="Chest")
    write_series(root / "xc", 1, study_uid=other, modality="XC", SeriesNumber=2, rgb=True,
                 ImageOrientationPatient=None, ImagePositionPatient=None, PatientPosition=None,
                 StudyDescription="Chest", ImageType=["ORIGINAL", "PRIMARY"])
    return root


@pytest.fixture(scope="module")
def sdk_studies(parity_study):
    """The SDK's own loader and selector (importing monai.deploy takes seconds: once per module)."""
    from monai.deploy.core import Fragment
    from monai.deploy.operators import (
        DICOMDataLoaderOperator,
        DICOMSeriesSelectorOperator,
    )

    fragment = Fragment()
    loader = DICOMDataLoaderOperator(fragment, name="loader")
    selector = DICOMSeriesSelectorOperator(fragment, name="selector")
    return selector, loader.load_data_to_studies(parity_study)


def sdk_selection(selector, studies, rules: dict, all_matched: bool) -> set[tuple[str, str, str]]:
    """The SDK's selections as (study, name, series) triples, each series kept under its first name."""
    result = set()
    for study_selection in selector.filter(rules, studies, all_matched):
        seen = set()
        for selected in study_selection.selected_series:
            uid = selected.series.SeriesInstanceUID
            if uid not in seen:
                seen.add(uid)
                result.add((study_selection.study.StudyInstanceUID, selected.selection_name, uid))
    return result


def our_selection(root: Path, rules: dict, all_matched: bool) -> set[tuple[str, str, str]]:
    parsed = parse_selection_rules(rules, source="parity rules")
    return {
        (study.study_instance_uid, s.selection_name, s.series.series_instance_uid)
        for study in scan_input(root, salt="parity").studies
        # The SDK has no originals-only policy: compare the matching semantics alone.
        for s in select_series(study, parsed, all_matched=all_matched, originals_only=False).selected
    }


@pytest.mark.parametrize("case", sorted(PARITY_RULES))
def test_same_selections_as_the_sdk(case, parity_study, sdk_studies):
    selector, studies = sdk_studies
    rules = PARITY_RULES[case]
    ours = our_selection(parity_study, rules, all_matched=True)
    assert ours == sdk_selection(selector, studies, rules, all_matched=True)
    assert ours, "each parity case selects something, or it proves nothing"


def test_same_first_match_selection_as_the_sdk_where_one_series_matches(parity_study, sdk_studies):
    selector, studies = sdk_studies
    rules = PARITY_RULES["orientation and spacing"]
    assert our_selection(parity_study, rules, False) == sdk_selection(selector, studies, rules, False)
