"""The free-text scrubber, the clinical-context line and the installation salt (logging: test_log_privacy)."""

from __future__ import annotations

import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from app.uid_salt import installation_salt, resolve_uid_salt
from operators.phi.clinical_context import LINE_LIMIT, shorten
from operators.phi.phi_text import TextScrubber, dates_in, identifiers_from_header


def header(**attributes) -> Dataset:
    ds = Dataset()
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    return ds


def scrub(text: str, **attributes) -> str:
    return TextScrubber(identifiers_from_header(header(**attributes))).scrub(text).text


@pytest.mark.parametrize(
    "text",
    [
        "Jose Muller", "Müller, José", "MÜLLER^JOSÉ^MARIA", "José Maria Müller", "J. Müller", "Muller J.", "müller josé",
        "Dr. José Müller", "MULLER, JOSE M.",
    ],
)
def test_patient_name_in_every_order_case_and_accent(text):
    out = scrub(f"Seen today: {text} reports pain.", PatientName="Müller^José^Maria")
    assert out == "Seen today: [NAME] reports pain." or out == "Seen today: Dr. [NAME] reports pain."


def test_japanese_ideographic_and_phonetic_groups():
    name = "Yamada^Tarou=山田^太郎=やまだ^たろう"
    out = scrub("山田太郎さんは転倒。やまだ たろう。Yamada Tarou, 患者ID 12345678。", PatientName=name, PatientID="12345678")
    assert "山田" not in out and "太郎" not in out and "やまだ" not in out and "Yamada" not in out and "12345678" not in out
    assert "転倒" in out and "さんは" in out


def test_empty_name_components_and_single_letter_parts_do_not_redact_everything():
    out = scrub("A 5 mm nodule, B-lines absent. Doe was seen.", PatientName="^^Doe^^")
    assert out == "A 5 mm nodule, B-lines absent. [NAME] was seen."
    assert scrub("Nothing to remove here.", PatientName="^^^^") == "Nothing to remove here."


def test_names_that_are_clinical_words_are_redacted_as_names_only():
    kwargs = {"PatientName": "Mass^Hope", "ReferringPhysicianName": "Burn^Grace"}
    out = scrub("Hope Mass has a mass in the left lobe; there is hope. Referred by Dr Burn for a burn.", **kwargs)
    assert out == "[NAME] has a mass in the left lobe; there is hope. Referred by Dr [NAME] for a burn."
    assert scrub("No mass seen. Burn of a special area.", **kwargs) == "No mass seen. Burn of a special area."
    assert scrub("MASS was admitted; H. Mass too; seen by Hope.", **kwargs) == "[NAME] was admitted; [NAME] too; seen by [NAME]."


def test_ids_accession_dates_phone_address_institution_from_the_header():
    kwargs = dict(
        PatientID="MRN-00123456", AccessionNumber="ACC998877", PatientBirthDate="19610423",
        PatientTelephoneNumbers="(217) 555-0142", PatientAddress="12 Canary Street, Springfield",
        InstitutionName="Riverton General Hospital",
    )
    text = (
        "id MRN00123456 or 123456, acc ACC-998877, born 23.4.1961 / April 23rd, 1961 / 230461, call 217.555.0142 "
        "or 555-0142, lives at 12 Canary Street in Springfield, treated at Riverton General Hospital."
    )
    out = scrub(text, **kwargs)
    for leaked in ("123456", "998877", "1961", "0142", "Canary", "Springfield", "Riverton"):
        assert leaked not in out, (leaked, out)
    assert out.count("[DATE]") == 3 and "[PHONE]" in out and "[INSTITUTION]" in out


def test_nested_sequences_and_private_pn_values_are_read():
    ds = header(PatientName="Okafor^Chidi")
    other = Dataset()
    other.PatientID = "ZX998811"
    ds.OtherPatientIDsSequence = Sequence([other])
    block = ds.private_block(0x0011, "VENDOR", create=True)
    block.add_new(0x01, "PN", "Adeyemi^Bola")
    scrubber = TextScrubber(identifiers_from_header(ds))
    assert scrubber.scrub("ZX998811 and Bola Adeyemi").text == "[ID] and [NAME]"


@pytest.mark.parametrize(
    ("text", "tag"),
    [
        ("on 2021-03-04", "[DATE]"), ("on 03/04/2021", "[DATE]"), ("on 4 March 2021", "[DATE]"), ("call (555) 123-4567", "[PHONE]"),
        ("call +44 20 7946 0958", "[PHONE]"), ("mail a.b@example.org", "[EMAIL]"), ("SSN 123-45-6789", "[ID]"),
        ("MRN: 7788123", "[ID]"), ("at 221B Baker Street, London", "[ADDRESS]"), ("a 93-year-old", "[AGE]"),
        ("aged 101", "[AGE]"), ("see https://pacs.example.org/v?s=1", "[URL]"), ("host 10.1.2.3", "[IP]"),
        ("Dr. Kapoor reviewed", "[NAME]"), ("uid 1.2.826.0.1.3680043.8.498.1", "[ID]"),
    ],
)
def test_patterns_without_header_values(text, tag):
    assert tag in TextScrubber().scrub(text).text


@pytest.mark.parametrize(
    "text",
    [
        "A 45-year-old man, BP 120/80 mmHg, EF 55%, 3.2 x 4.1 cm, W1500/L-600, C5-C6 and L4-L5, T2-weighted, BI-RADS 4.",
        "Series 3 image 45; CTDIvol 12.5 mGy; follow up in 6 months; since 2019; 1-2 weeks; at 08:00.",
    ],
)
def test_clinical_text_is_left_alone(text):
    result = TextScrubber().scrub(text)
    assert result.text == text and result.total == 0


def test_counts_per_category():
    result = TextScrubber(identifiers_from_header(header(PatientName="Doe^Jane"))).scrub("Jane Doe, 01/02/2020, jane@x.org")
    assert result.counts == {"NAME": 1, "DATE": 1, "EMAIL": 1}


def test_one_megabyte_of_free_text_is_scrubbed_completely():
    scrubber = TextScrubber(identifiers_from_header(header(PatientName="Müller^José", PatientID="ZX12345678")))
    unit = "José Müller (ZX12345678) seen 12/03/2020 with a small mass in the left lobe. "
    text = unit * (1_000_000 // len(unit) + 1)
    result = scrubber.scrub(text)  # linear-time patterns: about two seconds per megabyte on the reference CPU
    assert "Müller" not in result.text and "ZX12345678" not in result.text and "12/03/2020" not in result.text
    assert result.text.count("small mass in the left lobe") == text.count("small mass in the left lobe")


def test_dates_in_understands_written_forms():
    assert {d.isoformat() for d in dates_in("23 Apr 1961")} == {"1961-04-23"}
    assert "1961-04-23" in {d.isoformat() for d in dates_in("04/23/61")}
    assert "1961-04-23" in {d.isoformat() for d in dates_in("19610423")}


def test_shorten_never_cuts_inside_a_tag():
    text = "history: " + "word " * 20 + "[NAME] and more"
    cut = shorten(text, len(text) - 12)
    assert cut.endswith("…") and "[NA" not in cut.replace("[NAME]", "")
    assert len(shorten("x " * 1000, LINE_LIMIT)) <= LINE_LIMIT


# --------------------------------------------------------------------------- salt


def test_installation_salt_is_random_persistent_and_private(tmp_path, monkeypatch):
    monkeypatch.delenv("BIOMEDCLIP_MAP_UID_SALT", raising=False)
    first = installation_salt(tmp_path / "a")
    assert len(first) == 64 and installation_salt(tmp_path / "a") == first
    assert installation_salt(tmp_path / "b") != first
    assert (tmp_path / "a" / "uid-salt").stat().st_mode & 0o077 == 0
    monkeypatch.setenv("BIOMEDCLIP_MAP_UID_SALT", "site-secret")
    assert resolve_uid_salt(tmp_path / "a") == "site-secret"


# --------------------------------------------------------------------------- free text the header does not list


@pytest.mark.parametrize(
    ("text", "gone", "kept"),
    [
        ("Mother Kessandra Ulbright present.", ("Kessandra", "Ulbright"), ("Mother", "present")),
        ("Discussed with Ana Lima on the phone.", ("Ana", "Lima"), ("Discussed with", "on the phone")),
        ("Refik Zorlu (daughter) will bring her in.", ("Refik", "Zorlu"), ("(daughter) will bring her in",)),
        ("spoke to maria garcia about the dressing", ("maria", "garcia"), ("spoke to", "about the dressing")),
        ("Seen by Dr. Okonkwo-Bell in clinic.", ("Okonkwo",), ("Seen by Dr.", "in clinic")),
    ],
)
def test_names_in_no_header(text, gone, kept):
    out = TextScrubber().scrub(text).text
    assert "[NAME]" in out and not any(g in out for g in gone) and all(k in out for k in kept), out


def test_the_patients_common_word_surname_stays_a_word_across_a_sentence_end():
    assert scrub("no renal stone. Faith Stone", PatientName="Stone^Faith") == "no renal stone. [NAME]"
    assert scrub("Small stone in the left kidney; Faith Stone seen.", PatientName="Stone^Faith") == (
        "Small stone in the left kidney; [NAME] seen."
    )


def test_laterality_is_never_an_initial():
    assert scrub("STONE FAITH L HAND", PatientName="Stone^Faith") == "[NAME] L HAND"
    assert scrub("XR R HAND for Faith Stone", PatientName="Stone^Faith") == "XR R HAND for [NAME]"
    assert scrub("Burn to the L HAND, dorsum.", PatientName="Hand^Hope") == "Burn to the L HAND, dorsum."


def test_the_patients_name_next_to_a_common_word():
    assert scrub("Wound photo Rose Oyelaran", PatientName="Oyelaran^Rose") == "Wound photo [NAME]"
    assert scrub("Photograph of the right hand of Page taken in clinic.", PatientName="Page^Rose") == (
        "Photograph of the right hand of [NAME] taken in clinic."
    )


@pytest.mark.parametrize(
    "text",
    [
        "No renal stone. White matter hyperintensities. Bell's palsy excluded. Baker's cyst behind the right knee.",
        "XR RIGHT HAND BURN. L KNEE XR AP AND LATERAL. Burn to left and right palms, 1% TBSA.",
        "Known Parkinson's disease, Graves disease on carbimazole; Wood's lamp examination negative.",
        "Hill-Sachs lesion. Mass effect on the left lateral ventricle. May need grafting. Will review in clinic.",
        "Transferred to the hospital by ambulance; seen in the burns clinic; ward round done.",
        "BP 120/80, EF 55%, 3.2 x 4.1 cm, 2 views, 6/10 at rest, 12.5 mGy, since 2019, at 08:00.",
    ],
)
def test_clinical_words_eponyms_and_laterality_are_kept(text):
    result = TextScrubber(identifiers_from_header(header(PatientName="Stone^Faith"))).scrub(text)
    assert result.text == text and result.total == 0, result.text


@pytest.mark.parametrize(
    ("text", "tag"),
    [
        ("call +44 113 496 0806 ext. 12", "[PHONE]"), ("call 001-477-683-5337x40681", "[PHONE]"), ("tel (08063) 60837", "[PHONE]"),
        ("call +33 2 41 50 00 80", "[PHONE]"), ("SSN 123 45 6789 on file", "[ID]"),
        ("lives at 391 Johnson Burg Apt. 636, New Jeffreymouth, NM 72965", "[ADDRESS]"),
        ("fell outside Agnes-Wesack-Straße 26, 39150 Auerbach", "[ADDRESS]"), ("from 23, rue Victoire Perrier, 55722 Sainte René", "[ADDRESS]"),
        ("at Viale Sermonti, 13", "[ADDRESS]"), ("from 16315 Bradley Walk", "[ADDRESS]"),
        ("transferred from Riverton General Hospital", "[INSTITUTION]"), ("films from Klinikum Auerbach", "[INSTITUTION]"),
        ("referred from St. Mary's Hospital", "[INSTITUTION]"), ("follow-up at Taylor Clinic", "[INSTITUTION]"),
    ],
)
def test_phones_ssns_addresses_and_institutions_in_no_header(text, tag):
    out = TextScrubber().scrub(text).text
    assert tag in out and not any(ch.isdigit() for ch in out), out
