"""Benchmark: how well the free-text scrubber finds PHI in clinical snippets it was not written for.

The corpus is generated with the Faker library (several locales), not from the scrubber's own
lists: every name, street address, city, phone number, e-mail address and SSN comes from Faker;
dates, MRNs and hospital names are assembled from Faker's values in many written forms. Each
snippet has a synthetic DICOM header (the patient's name, ID, birth date, phone, address and the
header's own institution) and is scrubbed with a `TextScrubber` built from that header, as the
product does. Snippets mix sentences with PHI (the patient's name; names that are in no header,
with and without a title, capitalised or in lower case; international phone numbers with
extensions; SSNs with dashes or spaces; street addresses with any suffix; hospitals that are not the
header's; dates; e-mails; MRNs) with clinical sentences that carry none but use words that are also
surnames or given names (stone, rose, faith, white, hand, bell, ...), eponyms (Bell's palsy,
Baker's cyst) and laterality (L, R, left, right) -- those words are marked and must be kept.
Some patients are named after such words ("Stone^Faith"), and some snippets are in capitals.

**Split.** The corpus is split by seed into a development half (seeds ``seed*10**6 + i``) and a
held-out half (seeds ``(seed+1)*10**6 + i``); the sentence frames and the forms of hospital
names, dates and MRNs are split too (even-numbered ones in the development half, odd ones
held out), so the held-out half also tests wordings the scrubber was not tuned on. Rules were
tuned on the development half only; the JSON lists example misses for that half only.

**Lexicon independence.** The scrubber's given-name and surname lexicon is read from Faker's
person lists of `operators.phi.phi_names.LEXICON_LOCALES`; the corpus also draws names from locales
outside that set (`UNSEEN_LOCALES`), and name recall is reported for both groups, so what the
lexicon contributes is visible rather than assumed.

Figures (held-out half, and the development half for comparison):

- **recall** per category: the share of PHI spans whose every letter and digit lies inside a
  redacted span, and overall;
- **precision**: the share of redacted spans that overlap a PHI span;
- **keep rate**: the share of marked clinical words and laterality markers left untouched.

Usage: ``python -m bench.phi [--snippets 400] [--seed 7] [--out bench/results/phi.json]``
(exit 0 when the held-out half meets every target). The JSON holds counts and figures and, for
the development half, misses as frame templates with placeholders (never generated values).
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

from faker import Faker
from pydicom.dataset import Dataset

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from operators.phi.phi_names import LEXICON_LOCALES  # noqa: E402
from operators.phi.phi_text import TextScrubber, identifiers_from_header  # noqa: E402

#: Locales whose names are not in the scrubber's lexicon (Latin script).
UNSEEN_LOCALES = ("tr_TR", "fi_FI", "sv_SE", "cs_CZ", "en_IN", "hu_HU")
#: Locales the corpus draws from: those of the lexicon and the unseen ones, in equal shares.
CORPUS_LOCALES = ("en_US", "en_GB", "de_DE", "fr_FR", "es_ES", "it_IT", *UNSEEN_LOCALES)

TARGETS = {"recall": 0.95, "recall_name_not_in_header": 0.90, "precision": 0.97, "keep_rate": 1.0}

# Surnames and given names that are also clinical or ordinary words: some patients get them.
WORD_SURNAMES = ["Stone", "Rose", "White", "Hand", "Bell", "Brown", "Young", "Hill", "Baker", "Ward", "Mass", "Moss", "Wood", "Page"]
WORD_GIVEN = ["Faith", "Rose", "Grace", "Hope", "May", "Will", "Mark", "Joy", "Iris", "Amber"]

TITLES = ["Dr", "Dr.", "Mr", "Mrs", "Ms", "Prof.", "Nurse", "Sister", "Mrs."]

# PHI frames: {SLOT}s are PHI of that category; the rest is not PHI.
FRAMES: dict[str, list[str]] = {
    "name_in_header": [
        "{PATIENT} presented with a partial-thickness burn to the left forearm.",
        "Wound photo {PATIENT}, day 3 after the scald.",
        "Pt {PATIENT} reports pain 6/10 at rest.",
        "{PATIENT} fell at home and hurt the right wrist.",
        "Photograph of the right hand of {PATIENT} taken in clinic.",
        "CT chest for {PATIENT} to exclude pulmonary embolism.",
        "History from {PATIENT}: burn from hot oil two days ago.",
        "Reviewed {PATIENT} today, dressing changed.",
    ],
    "name_not_in_header": [
        "Mother {OTHER} present during the examination.",
        "Discussed with {OTHER} on the phone.",
        "{OTHER} (daughter) will bring her in for review.",
        "Seen by {TITLE} {OTHER} in the burns clinic.",
        "Accompanied by her husband {OTHER}.",
        "Referred by {TITLE} {OTHER} for a chest radiograph.",
        "{OTHER} called to ask about the results.",
        "Consent given by {OTHER}, next of kin.",
        "Images reviewed with {TITLE} {OTHER} and {OTHER}.",
        "Neighbour {OTHER} found him on the floor.",
        "Photographs taken by {OTHER}, staff nurse.",
        "Family: {OTHER} and {OTHER} visiting today.",
        "{TITLE} {OTHER} to review the graft on Monday.",
        "Brother {OTHER} has the same condition.",
    ],
    "name_lower_case": [
        "spoke to {LOWER} about the dressing plan.",
        "daughter {LOWER} at the bedside.",
        "seen together with {LOWER} from physiotherapy.",
        "please call {LOWER} when the report is ready.",
        "partner {LOWER} says the burn was from a kettle.",
        "bloods taken by {LOWER}.",
    ],
    "phone": [
        "Contact the ward on {PHONE}.",
        "Daughter's number {PHONE}, evenings only.",
        "Call {PHONE} with the results.",
        "tel {PHONE}",
        "Phone: {PHONE}.",
        "GP surgery {PHONE} asked for a copy.",
        "Mobile {PHONE}.",
        "Reach the family at {PHONE} if the graft fails.",
    ],
    "ssn": [
        "SSN {SSN} on file.",
        "Social security number {SSN}.",
        "SSN: {SSN}",
        "Insurance checked, SSN {SSN}, no cover issue.",
    ],
    "address": [
        "Lives at {ADDRESS}.",
        "Address: {ADDRESS}",
        "Fell outside {ADDRESS} on the ice.",
        "Home address {ADDRESS}; lives alone.",
        "Ambulance collected her from {ADDRESS}.",
        "Moved to {ADDRESS} last month.",
    ],
    "institution": [
        "Transferred from {INSTITUTION}.",
        "Previous imaging at {INSTITUTION} in 2019.",
        "Referred from {INSTITUTION} burns unit.",
        "Outside films from {INSTITUTION} reviewed.",
        "{INSTITUTION} requests a second opinion.",
        "Follow-up at {INSTITUTION} in 2 weeks.",
    ],
    "date": [
        "Seen on {DATE}.",
        "DOB {DATE}",
        "Burn sustained {DATE} at home.",
        "Compare with CT of {DATE}.",
        "Born {DATE}, lives independently.",
        "Last dressing change {DATE}.",
    ],
    "email": [
        "Send the report to {EMAIL}.",
        "email {EMAIL} for the images",
        "Family contact ({EMAIL}) informed.",
        "Questions to {EMAIL} please.",
    ],
    "mrn": [
        "MRN {MRN}",
        "Hospital no. {MRN}, second admission.",
        "Medical record number {MRN}.",
        "Patient ID {MRN} checked at the bedside.",
        "Chart #{MRN} reviewed.",
        "MRN: {MRN}; allergies none known.",
    ],
}
# Clinical sentences without PHI; <<word>> marks a word that must be kept.
CLEAN_FRAMES = [
    "No renal <<stone>>.",
    "Small <<stone>> in the <<left>> kidney, 4 mm.",
    "<<Rose>>-coloured erythema over the chest wall.",
    "<<White>> matter hyperintensities, mild.",
    "Burn to the <<L>> <<HAND>>, dorsum.",
    "<<R>> <<HAND>> superficial partial thickness burn.",
    "<<Bell>>'s palsy excluded clinically.",
    "<<Hand>> therapy review in 2 weeks.",
    "Strong religious <<faith>>; declines blood products.",
    "<<Brown>> discolouration of the wound bed.",
    "<<Young>> adult with a scald to the <<right>> thigh.",
    "<<Mass>> effect on the <<left>> lateral ventricle.",
    "<<May>> need grafting if not healed by day 14.",
    "<<Will>> review in the dressing clinic.",
    "<<Mark>> the wound margins before the photograph.",
    "<<Hope>> for spontaneous healing within 3 weeks.",
    "XR <<RIGHT>> <<HAND>> BURN",
    "<<LEFT>> <<FOOT>> SCALD, 2 VIEWS",
    "<<L>> <<KNEE>> XR AP AND LATERAL",
    "XR <<R>> <<WRIST>> 2 VIEWS",
    "<<Hill>>-Sachs lesion of the humeral head.",
    "<<Baker>>'s cyst behind the <<right>> knee.",
    "<<Ward>> round done, plan unchanged.",
    "Dressing: <<silver>> sulfadiazine, daily.",
    "<<Graves>> disease, on carbimazole.",
    "Known <<Parkinson>>'s disease, falls risk.",
    "<<Grace>> period of 48 hours for dressings.",
    "Eschar over the <<L>> forearm, <<R>> forearm spared.",
    "<<Wood>>'s lamp examination negative.",
    "Burn to <<left>> and <<right>> palms, 1% TBSA.",
    "<<Iris>> and lens unremarkable.",
    "<<Joy>> at discharge; mobilising well.",
]


@dataclass
class Sample:
    text: str
    header: Dataset
    spans: list[tuple[int, int, str]] = field(default_factory=list)  # PHI: start, end, category
    keep: list[tuple[int, int]] = field(default_factory=list)  # words that must stay
    templates: list[str] = field(default_factory=list)
    name_group: str = ""  # "lexicon" or "unseen": where the snippet's names come from


def _date_forms(d: date) -> list[str]:
    """`d` written in the ways clinical notes write dates."""
    english = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October", "November", "December"][d.month - 1]
    return [
        f"{d:%d/%m/%Y}", f"{d:%m/%d/%Y}", f"{d:%Y-%m-%d}", f"{d.day}.{d.month}.{d.year}", f"{english} {d.day}, {d.year}",
        f"{d.day} {english[:3]} {d.year}", f"{d:%d.%m.%y}", f"{d.day}th of {english} {d.year}", f"{d:%Y%m%d}", f"{d.day}-{english[:3]}-{d.year}",
        f"{d.month}/{d.day}/{d:%y}", f"{english} {d.year}", f"{d:%d-%m-%Y}", f"{d.day} {english} {d.year}",
    ]


def _institution_forms(fake: Faker) -> list[str]:
    """Hospital names built from Faker's cities and people (Faker has no hospital provider)."""
    city, last, first = fake.city(), fake.last_name(), fake.first_name()
    return [
        f"{city} General Hospital", f"{last} Memorial Hospital", f"St. {first}'s Hospital", f"{city} Medical Center",
        f"{last} Clinic", f"Klinikum {city}", f"{city} University Hospital", f"Hôpital {last}",
        f"{city} Children's Hospital", f"University Hospital of {city}", f"{city} Royal Infirmary", f"Ospedale {city}",
        f"{last} Medical Centre", f"Centre Hospitalier de {city}", f"{city} Community Hospital", f"Hospital {first} {last}",
    ]


def _mrn_forms(rng: random.Random) -> list[str]:
    """One random record number written in the shapes hospitals use."""
    digits = "".join(rng.choice("0123456789") for _ in range(rng.randrange(7, 11)))
    letters = "".join(rng.choice("ABCDEFGHJKLMNPRSTUVWXYZ") for _ in range(2))
    return [
        digits, f"{letters[0]}{digits[:7]}", f"{letters}-{digits[:6]}", f"{digits[:3]}-{digits[3:6]}-{digits[6:]}",
        f"MRN-{digits[:8]}", f"{letters[0]} {digits[:3]} {digits[3:6]}", f"{digits[:7]}{letters[0]}", f"{letters}{digits[:6]}",
    ]


def _phone(fake: Faker, rng: random.Random) -> str:
    """A phone number of the snippet's locale, sometimes with an extension."""
    number = fake.phone_number()
    extension = rng.choice(["", "", "", f" ext. {rng.randrange(10, 9999)}", f" x{rng.randrange(10, 9999)}", f" ext {rng.randrange(100, 999)}", f" (ext {rng.randrange(10, 99)})"])
    return number + extension if "x" not in number else number


def _ssn(rng: random.Random) -> str:
    """A US social security number with dashes, spaces, nothing or en dashes between its groups."""
    area, group, serial = rng.randrange(100, 899), rng.randrange(10, 99), rng.randrange(1000, 9999)
    return rng.choice([f"{area}-{group}-{serial}", f"{area} {group} {serial}", f"{area}{group}{serial}", f"{area}–{group}–{serial}"])


class Generator:
    """Makes one snippet per seed; `held_out` chooses which half of the frames and forms is used."""

    def __init__(self, held_out: bool):
        self.parity = 1 if held_out else 0
        self.fakers = {locale: Faker(locale) for locale in CORPUS_LOCALES}

    def _half(self, items: list) -> list:
        return [item for index, item in enumerate(items) if index % 2 == self.parity]

    def sample(self, seed: int) -> Sample:
        rng = random.Random(seed)
        locale = rng.choice(CORPUS_LOCALES)
        fake = self.fakers[locale]
        fake.seed_instance(seed)
        family, given = fake.last_name(), fake.first_name()
        if rng.random() < 0.25:
            family, given = rng.choice(WORD_SURNAMES), rng.choice(WORD_GIVEN)
        birth = fake.date_of_birth(minimum_age=1, maximum_age=95)
        header = Dataset()
        header.PatientName = f"{family}^{given}"
        header.PatientID = _mrn_forms(rng)[0]
        header.PatientBirthDate = birth.strftime("%Y%m%d")
        header.PatientTelephoneNumbers = fake.phone_number()[:16]
        header.PatientAddress = fake.street_address()[:64]
        header.InstitutionName = f"{fake.city()} General Hospital"[:64]
        values = {
            "PATIENT": lambda: rng.choice([
                f"{given} {family}", f"{family}, {given}", f"{family.upper()}, {given.upper()}", f"{family} {given}",
                f"{given[0]}. {family}", given, family, ("Mrs ", family), f"{given.upper()} {family.upper()}",
            ]),
            "OTHER": lambda: rng.choice([f"{fake.first_name()} {fake.last_name()}", f"{fake.first_name()} {fake.last_name()}", fake.last_name() if rng.random() < 0.3 else f"{fake.first_name()} {fake.last_name()}"]),
            "LOWER": lambda: f"{fake.first_name()} {fake.last_name()}".lower(),
            "PHONE": lambda: _phone(fake, rng),
            "SSN": lambda: _ssn(rng),
            "ADDRESS": lambda: rng.choice([fake.street_address(), fake.address().replace("\n", ", ")]),
            "INSTITUTION": lambda: rng.choice(self._half(_institution_forms(fake))),
            "DATE": lambda: rng.choice(self._half(_date_forms(rng.choice([birth, fake.date_between("-10y", "today")])))),
            "EMAIL": lambda: fake.email(),
            "MRN": lambda: rng.choice(self._half(_mrn_forms(rng))),
        }
        pieces: list[tuple[str, str]] = []  # (category or "clean", frame)
        for _ in range(rng.choice([0, 1, 1, 2])):
            category = rng.choice(list(FRAMES))
            pieces.append((category, rng.choice(self._half(FRAMES[category]))))
        for _ in range(rng.choice([1, 1, 2])):
            pieces.append(("clean", rng.choice(self._half(CLEAN_FRAMES))))
        # the audit's case: a clinical word next to the patient's name written as a word
        if family in WORD_SURNAMES and rng.random() < 0.5:
            pieces.append(("name_in_header", "{PATIENT}"))
        rng.shuffle(pieces)
        sample = Sample("", header, name_group="unseen" if locale in UNSEEN_LOCALES else "lexicon")
        upper = rng.random() < 0.15
        for category, frame in pieces:
            sample.templates.append(frame)
            if sample.text:
                sample.text += " "
            self._fill(sample, category, frame, values, rng, upper)
        return sample

    def _fill(self, sample: Sample, category: str, frame: str, values: dict, rng: random.Random, upper: bool) -> None:
        position = 0
        for match in re.finditer(r"\{(\w+)\}|<<([^>]+)>>", frame):
            sample.text += _case(frame[position : match.start()], upper)
            if match.group(2) is not None:
                word = _case(match.group(2), upper)
                sample.keep.append((len(sample.text), len(sample.text) + len(word)))
                sample.text += word
            elif match.group(1) == "TITLE":
                sample.text += _case(rng.choice(TITLES), upper)
            else:
                value = values[match.group(1)]()
                if isinstance(value, tuple):  # (title, name): the title is not PHI
                    sample.text += _case(value[0], upper)
                    value = value[1]
                value = _case(value, upper)
                slot_category = {"PATIENT": "name_in_header", "OTHER": "name_not_in_header", "LOWER": "name_lower_case"}.get(match.group(1), category)
                sample.spans.append((len(sample.text), len(sample.text) + len(value), slot_category))
                sample.text += value
            position = match.end()
        sample.text += _case(frame[position:], upper)


def _case(text: str, upper: bool) -> str:
    """Upper case when asked and when that keeps the length (the spans are character offsets)."""
    return text.upper() if upper and len(text.upper()) == len(text) else text


def _covered(start: int, end: int, text: str, redacted: list[tuple[int, int, str]]) -> bool:
    return all(not text[i].isalnum() or any(r[0] <= i < r[1] for r in redacted) for i in range(start, end))


def _touched(start: int, end: int, redacted: list[tuple[int, int, str]]) -> bool:
    return any(r[0] < end and start < r[1] for r in redacted)


def _template(sample: Sample, span: tuple[int, int, str]) -> str:
    for frame in sample.templates:
        if any(slot in frame for slot in ("{OTHER}", "{PATIENT}", "{LOWER}")) and span[2].startswith("name"):
            return frame
        if "{" + span[2].upper() + "}" in frame or (span[2] == "mrn" and "{MRN}" in frame):
            return frame
    return "?"


def evaluate(samples: list[Sample], *, with_misses: bool) -> dict:
    """Recall per category, precision and keep rate over `samples`."""
    total: Counter = Counter()
    found: Counter = Counter()
    redacted_spans = redacted_true = keep_total = keep_kept = 0
    misses: Counter = Counter()
    over: Counter = Counter()
    for sample in samples:
        redacted = TextScrubber(identifiers_from_header(sample.header)).find(sample.text)
        for start, end, category in sample.spans:
            keys = [category] + ([f"{category}_{sample.name_group}_locales"] if category.startswith("name_not") or category == "name_lower_case" else [])
            hit = _covered(start, end, sample.text, redacted)
            for key in keys:
                total[key] += 1
                found[key] += hit
            if not hit and with_misses:
                misses[f"{category} in: {_template(sample, (start, end, category))}"] += 1
        for start, end, _ in redacted:
            redacted_spans += 1
            true = any(s[0] < end and start < s[1] for s in sample.spans)
            redacted_true += true
            if not true and with_misses:
                over[" / ".join(sample.templates)] += 1
        for start, end in sample.keep:
            keep_total += 1
            keep_kept += not _touched(start, end, redacted)
    categories = [c for c in total if not c.endswith("_locales")]
    spans = sum(total[c] for c in categories)
    recalled = sum(found[c] for c in categories)
    result = {
        "snippets": len(samples),
        "phi_spans": spans,
        "recall": round(recalled / spans, 4) if spans else None,
        "recall_by_category": {c: {"spans": total[c], "recall": round(found[c] / total[c], 4)} for c in sorted(total)},
        "redacted_spans": redacted_spans,
        "precision": round(redacted_true / redacted_spans, 4) if redacted_spans else None,
        "keep_words": keep_total,
        "keep_rate": round(keep_kept / keep_total, 4) if keep_total else None,
    }
    if with_misses:
        result["misses"] = dict(misses.most_common(15))
        result["over_redacted_in"] = dict(over.most_common(10))
    return result


def run(snippets: int, seed: int) -> dict:
    """Generate both halves, score them, and compare the held-out half with the targets."""
    started = time.perf_counter()
    development = Generator(held_out=False)
    held_out = Generator(held_out=True)
    dev = [development.sample(seed * 10**6 + i) for i in range(snippets)]
    test = [held_out.sample((seed + 1) * 10**6 + i) for i in range(snippets)]
    held = evaluate(test, with_misses=False)
    name_recall = held["recall_by_category"].get("name_not_in_header", {}).get("recall", 0.0)
    met = {
        "recall": (held["recall"] or 0) >= TARGETS["recall"],
        "recall_name_not_in_header": name_recall >= TARGETS["recall_name_not_in_header"],
        "precision": (held["precision"] or 0) >= TARGETS["precision"],
        "keep_rate": (held["keep_rate"] or 0) >= TARGETS["keep_rate"],
    }
    import faker

    return {
        "corpus": {"generator": f"Faker {faker.VERSION}", "locales": list(CORPUS_LOCALES), "unseen_locales": list(UNSEEN_LOCALES),
                   "lexicon_locales": list(LEXICON_LOCALES), "seed": seed, "snippets_per_half": snippets},
        "held_out": held,
        "targets": TARGETS,
        "targets_met": met,
        "development": evaluate(dev, with_misses=True),
        "seconds": round(time.perf_counter() - started, 2),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--snippets", type=int, default=400, help="snippets in each half (default 400)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "phi.json")
    parser.add_argument("--development-only", action="store_true", help="score the development half only (for tuning)")
    args = parser.parse_args(argv)
    if args.development_only:
        result = {"development": evaluate([Generator(held_out=False).sample(args.seed * 10**6 + i) for i in range(args.snippets)], with_misses=True)}
        print(json.dumps(result, indent=2, ensure_ascii=False))
        return 0
    result = run(args.snippets, args.seed)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    print(json.dumps(result, indent=2, ensure_ascii=False))
    return 0 if all(result["targets_met"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
