"""Scrubbing identifying information out of free text taken from DICOM headers.

Free text in a study (descriptions, clinical history, reason for the request, image comments)
is typed by people and often carries the patient's name, identifiers, dates or a phone number.
Before any such text is used by the product (a prompt, an SR text item, a log line) it passes
through a `TextScrubber`, which works in two layers:

1. **Exact values from the study's own header** (`StudyIdentifiers`): every person name in the
   header (patient, other and birth names, referring / performing / reading physicians, operators,
   in all their component orders, cases, with or without accents and middle names, initials, and
   the ideographic and phonetic groups), the patient ID and every other ID-like attribute, the
   accession number, every date in common written formats, phone numbers, institution names,
   addresses and e-mail addresses.
2. **Patterns** for what the header does not list: dates, phone numbers of any country (prefixes,
   extensions), e-mail addresses, SSN-like and MRN-like identifiers, street addresses (many street
   suffixes and languages, postcodes, towns), hospital and clinic names, ages over 89, URLs, IP
   addresses, and names: after a title ("Dr Smith"), after a relationship or role word ("Mother
   Kessandra Ulbright"), known given names and surnames (`operators.phi.phi_names`) written as names,
   and two capitalised words in a row that are not ordinary or clinical words (`NOT_NAMES`).

Each redacted span is replaced by a tag naming its category (`[NAME]`, `[ID]`, `[DATE]`, ...),
and the scrubber counts redactions per category (for the audit trail; never the values).

Names that are also ordinary or clinical words ("Hope Mass", "Burn") are redacted wherever they
stand in a name context (next to another part of the study's names, after a title, after "seen
by", capitalised inside a sentence) but not when they are used as words ("no mass seen", "Burn of
a special area", "no renal stone. Faith Stone"); sides (L, R, left, right) and body parts are never
taken for initials or names ("STONE FAITH L HAND"). `bench/phi.py` measures recall and precision on
a generated corpus the rules were not written from (README, "Patient privacy"). Every pattern is a
linear-time regular expression and name matching is a dictionary look-up per word, so a
megabyte of text is scrubbed in well under a few seconds.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date

from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.valuerep import PersonName

from operators.phi.phi_names import given_names, surnames

NAME = "NAME"
ID = "ID"
DATE = "DATE"
PHONE = "PHONE"
EMAIL = "EMAIL"
ADDRESS = "ADDRESS"
INSTITUTION = "INSTITUTION"
AGE = "AGE"
URL = "URL"
IP = "IP"

#: Every category a redaction can have, in the order reports list them.
CATEGORIES = (NAME, ID, DATE, PHONE, EMAIL, ADDRESS, INSTITUTION, AGE, URL, IP)

# When spans of different categories overlap, the merged span takes the category that ranks first.
_PRIORITY = {category: rank for rank, category in enumerate((EMAIL, URL, IP, PHONE, DATE, AGE, ADDRESS, INSTITUTION, ID, NAME))}

#: Titles and relationship words after which a capitalised word is taken to be a name.
TITLES = frozenset({"mr", "mrs", "ms", "miss", "mx", "dr", "prof", "professor", "sir", "madam", "mme", "herr", "frau", "sr", "sra"})

#: Name particles: parts of compound names that are only redacted next to another part of the name.
PARTICLES = frozenset(
    {"van", "von", "der", "den", "de", "del", "della", "di", "da", "dos", "das", "du", "la", "le", "el", "al",
     "bin", "ben", "ibn", "st", "ter", "ten", "mac", "y", "e", "do"}
)

#: Ordinary or clinical words that are also given or family names. Such a name part is redacted
#: only in a name context, so that "no mass seen" keeps its meaning for a patient called Mass.
COMMON_WORDS = frozenset(
    """
    a an the and or of in on at to for with by from as is was be are no not yes left right
    mass lesion burn burns wound skin scar bone bones head neck chest heart lung lungs liver
    kidney back hand hands foot feet arm arms leg legs knee hip spine brain eye eyes ear nose
    mouth face body blood vessel vein artery nerve joint wall walls base apex root stem cell
    white black brown gray grey green red blue gold silver rose violet olive amber ruby pearl
    hope grace faith joy love mercy patience prudence charity honor honour chance lucky sunny
    young old long short small large little big tall low high hill hills wood woods stone stones
    field fields brook brooks lake lakes river rivers bush bushes moss fern marsh mills mill
    banks bank ford fords bridge bridges cross crossing gate gates hall halls house houses
    king queen prince duke earl knight bishop pope dean chancellor marshal sheriff judge
    baker cook cooke smith miller mason carter cooper turner walker fisher hunter shepherd
    taylor tailor porter potter parker bell bells page price rich strong sharp sweet wise
    may june april august summer winter autumn spring day days dawn eve night morning
    will bill mark frank grant sterling guy rob jack pat sue don dale wade chase drew gale
    fox wolf bird bear lamb hart hawk crane swift finch jay robin wren martin
    dye gross mild moderate severe acute chronic normal abnormal clear free fair good best
    best noble power powers law laws rule rules case cases sample samples test tests study
    series image images view views scan scans film plain contrast dose field fields phase
    stage grade type class form forms line lines level levels point points block blocks
    edge edges ring rings cap caps pan box boxes bond bonds cash sale sales price prices
    ward wards bed beds care nurse doctor patient child baby boy girl man men woman women
    north south east west central lateral medial anterior posterior superior inferior
    major minor early late new now then here there well sick sound still ill
    bay cliff dell glen heath lane moore more moor park parks dunn rice salt sugar
    pain fever cough rash fracture tumor tumour cyst nodule node nodes edema oedema
    fluid effusion stone stones cast casts pin pins plate plates screw screws wire wires
    """.split()
)

#: Words that are not names wherever they stand: function words, words notes put next to names,
#: and clinical vocabulary that may be capitalised (headings, the start of a sentence, capitals).
NOT_NAMES = COMMON_WORDS | frozenset(
    """
    i me my we our you your he him his she her hers they them their it its this that these those who whom whose which what
    when where why how all any some each every both either neither other another such same own very too also just only
    again please here there today tonight yesterday tomorrow now then soon later already still yet ever never always
    has have had having do does did done is am are was were been being will would shall should can could may might must
    not nor but if so than because while until unless although though since about above below under over into onto upon
    out off up down across along around behind beside besides between beyond near through throughout toward towards within
    without via per pro re vs versus etc ie eg
    says said say states stated reports reported report asks asked ask tells told informed aware agrees agreed consented
    present visiting visited called calls phoned rang spoke discussed reviewed seen saw seeing examined noted confirmed
    found brought bring brings came come comes went goes gone lives lived living stays stayed works worked needs wants
    staff nurse nurses doctor doctors team unit units clinic clinics ward wards theatre theater department dept service
    services family relative relatives friend friends husband wife son daughter mother father brother sister partner
    parents parent child children carer carers guardian neighbour neighbor kin visitor visitors
    mon monday tue tuesday wed wednesday thu thursday fri friday sat saturday sun sunday
    january february march april june july august september october november december jan feb mar apr jun jul aug sep sept oct nov dec
    burn burns scald scalds wound wounds graft grafts grafting dressing dressings eschar blister blisters erythema oedema
    thickness partial full superficial deep dermal epidermal flame contact chemical electrical friction flash
    xr ct mri mr us pet cr dx xa nm ecg ekg ap pa lat ax cor sag views view ct-scan radiograph radiographs xray x-ray
    hand hands palm palms finger fingers thumb wrist wrists forearm forearms elbow arm arms shoulder foot feet toe toes
    ankle knee knees leg legs thigh thighs hip hips chest abdomen abdominal back face neck scalp head ear ears eye eyes lip
    lips trunk perineum groin buttock buttocks kidney kidneys renal liver lung lungs heart brain spine pelvis skull bone
    lens iris retina cornea pupil sclera optic disc
    left right bilateral lateral medial proximal distal anterior posterior dorsal ventral volar plantar upper lower
    patient patients pt pts history hx exam examination impression findings finding comparison technique indication
    clinical request requested reason study series image images scan scans photo photograph photographs picture
    disease syndrome sign palsy cyst lamp lesion score scale criteria classification law test reflex node nodes
    day days week weeks month months year years hour hours minute minutes morning evening night afternoon
    mild moderate severe acute chronic stable unchanged improved improving worse worsening healed healing
    plan review follow followup follow-up discharge admission admitted transfer transferred referral referred
    yes no none nil nothing normal abnormal negative positive unremarkable likely possible probable suspected query
    known new old prior previous current recent first second third last next
    """.split()
)

@functools.lru_cache(maxsize=1)
def dicom_words() -> frozenset[str]:
    """Folded words of DICOM attribute names (pydicom's data dictionary): "Photometric Interpretation",
    "Float Pixel Data", "Window Center" are the product's own wording, never two names in a row."""
    from pydicom.datadict import DicomDictionary

    return frozenset(fold(word) for entry in DicomDictionary.values() for word in re.findall(r"[A-Za-z]{2,}", entry[2]))


@functools.lru_cache(maxsize=1)
def dicom_keywords() -> frozenset[str]:
    """DICOM attribute keywords ("BodyPartExamined"): never a name."""
    from pydicom.datadict import keyword_dict

    return frozenset(keyword_dict)


#: Words after which the next words are a person's name ("Mother Kessandra Ulbright", "seen by Ana Lima").
STRONG_CUES = frozenset(
    """
    mother mum mom mam father dad son daughter wife husband partner spouse fiance fiancee boyfriend girlfriend sister brother
    aunt uncle niece nephew cousin grandmother grandma granny grandfather grandpa grandson granddaughter stepmother
    stepfather guardian carer caregiver friend neighbour neighbor colleague flatmate roommate
    physiotherapist physio radiographer sonographer consultant registrar surgeon physician radiologist dermatologist
    """.split()
)
#: The product's and its platform's own names, which its texts use: never a person.
PRODUCT_WORDS = frozenset("monai deploy express holoscan biomedclip triton pacs orthanc dicom dicomweb".split())
#: Words after which capitalised words are a name only with more evidence (two of them, or a known name).
WEAK_CUES = frozenset({"by", "with", "to", "per", "cc", "dear", "attn", "and", "contact", "informed", "told", "called", "kin"})
#: Words after a capitalised word that make it an eponym, not a person ("Bell's palsy", "Graves disease").
_EPONYM_AFTER = re.compile(
    r"^(?:['’]s)?[\s-]+(?:disease|syndrome|sign|palsy|cyst|lamp|lesion|score|scale|criteria|classification|law|test|reflex"
    r"|node|nodes|fracture|formula|chart|rule|manoeuvre|maneuver|procedure|operation|flap|incision|phenomenon|triad)\b",
    re.IGNORECASE,
)
_NAME_TOKEN = re.compile(r"[^\W\d_](?:[^\W\d_]|['’](?=[^\W\d_])|-(?=[^\W\d_]))*")
_SENTENCE_START = re.compile(r"(?:^|[.!?:;\n(\[\"]\s*)$")


#: Words after which a capitalised word is a person ("referred by Hope", "Dear Brown").
_NAME_LEADS = frozenset({"by", "per", "cc", "dear", "attn", "pt", "patient"})
_WORD = re.compile(r"[^\W_]+")
_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff\uff66-\uff9f]")
_NAME_GLUE = re.compile(r"^[\s,^'’.\-]*$")


class ScrubError(ValueError):
    """Text cannot be scrubbed (it is not text); the message says what was given."""


# --------------------------------------------------------------------------- header identifiers


@functools.lru_cache(maxsize=65536)
def fold(text: str) -> str:
    """Case- and accent-insensitive form of a word: NFKD, combining marks removed, case-folded."""
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch)).casefold()


@dataclass
class PersonNameParts:
    """The words of one person name: Latin-script words and non-Latin (CJK, kana, Hangul) strings."""

    words: set[str] = field(default_factory=set)  # folded words of two or more letters
    initials: set[str] = field(default_factory=set)  # folded single letters
    scripts: set[str] = field(default_factory=set)  # non-Latin components, matched as substrings


@dataclass
class StudyIdentifiers:
    """Identifying values read from a study's DICOM header(s), for exact-value redaction.

    Built by `identifiers_from_headers`; the values never leave the process (they are neither
    logged nor written anywhere).
    """

    names: list[PersonNameParts] = field(default_factory=list)
    ids: set[str] = field(default_factory=set)
    dates: set[date] = field(default_factory=set)
    phones: set[str] = field(default_factory=set)  # digits only
    addresses: set[str] = field(default_factory=set)
    institutions: set[str] = field(default_factory=set)
    emails: set[str] = field(default_factory=set)

    def __bool__(self) -> bool:
        return any((self.names, self.ids, self.dates, self.phones, self.addresses, self.institutions, self.emails))

    def merge(self, other: "StudyIdentifiers") -> None:
        """Add `other`'s values to these (for several headers of one study)."""
        self.names.extend(other.names)
        self.ids |= other.ids
        self.dates |= other.dates
        self.phones |= other.phones
        self.addresses |= other.addresses
        self.institutions |= other.institutions
        self.emails |= other.emails


# Attributes whose values identify a person, a request or a record (besides every PN value).
_ID_KEYWORDS = frozenset(
    {
        "PatientID", "OtherPatientIDs", "IssuerOfPatientID", "AccessionNumber", "StudyID", "RequestedProcedureID",
        "ScheduledProcedureStepID", "PerformedProcedureStepID", "AdmissionID", "ServiceEpisodeID", "MedicalRecordLocator",
        "PlacerOrderNumberImagingServiceRequest", "FillerOrderNumberImagingServiceRequest",
        "PlacerOrderNumberProcedure", "FillerOrderNumberProcedure", "PlacerOrderNumberImagingServiceRequestRetired",
        "FillerOrderNumberImagingServiceRequestRetired", "ClinicalTrialSubjectID", "ClinicalTrialSubjectReadingID",
        "PatientInsurancePlanCodeSequence", "DeviceSerialNumber", "ContainerIdentifier", "SpecimenIdentifier",
        "VisitComments", "PersonIdentificationCodeSequence", "CodeValue", "MilitaryRank", "BranchOfService",
        "InsurancePlanIdentification", "OtherPatientIDsSequence", "PatientAccountNumber",
    }
)
_ADDRESS_KEYWORDS = frozenset(
    {"PatientAddress", "InstitutionAddress", "ReferringPhysicianAddress", "PersonAddress", "RegionOfResidence",
     "PatientInstitutionResidence", "CurrentPatientLocation", "AssignedLocation", "PerformedLocation",
     "ScheduledStudyLocation"}
)
_INSTITUTION_KEYWORDS = frozenset({"InstitutionName", "ResponsibleOrganization", "InstitutionDepartmentName"})
_PHONE_KEYWORDS = frozenset(
    {"PatientTelephoneNumbers", "ReferringPhysicianTelephoneNumbers", "PersonTelephoneNumbers", "ResponsiblePersonTelephoneNumbers"}
)
_TELECOM_KEYWORDS = frozenset({"PatientTelecomInformation", "PersonTelecomInformation"})
# Keywords whose values are coded concepts, not identifiers, even though they match the ID rules.
_NOT_IDENTIFIERS = frozenset({"CodeValue"})


def _values(value: object) -> list[str]:
    if value is None:
        return []
    if isinstance(value, (MultiValue, list, tuple)):
        return [str(v) for v in value if v not in (None, "")]
    text = str(value)
    return [text] if text.strip() else []


def _person_parts(value: object) -> PersonNameParts:
    """The words, initials and non-Latin strings of a PN value (all three component groups)."""
    name = value if isinstance(value, PersonName) else PersonName(str(value))
    parts = PersonNameParts()
    raw = str(name)
    for group in re.split(r"=", raw):
        components = [c.strip() for c in group.split("^")]
        for component in components:
            if not component:
                continue
            if _CJK.search(component):
                parts.scripts.add(component)
                continue
            for word in _WORD.findall(component):
                folded = fold(word)
                if len(folded) == 1:
                    parts.initials.add(folded)
                elif folded not in TITLES:
                    parts.words.add(folded)
        # family+given written together is how CJK names usually appear in text
        cjk = [c for c in components if c and _CJK.search(c)]
        if len(cjk) >= 2:
            parts.scripts.add(cjk[0] + cjk[1])
            parts.scripts.add(cjk[1] + cjk[0])
    return parts


def _date_of(text: str) -> date | None:
    digits = text.strip()[:8]
    if len(digits) != 8 or not digits.isdigit():
        return None
    try:
        return date(int(digits[:4]), int(digits[4:6]), int(digits[6:8]))
    except ValueError:
        return None


def identifiers_from_header(header: Dataset) -> StudyIdentifiers:
    """Collect the identifying values of one DICOM header, nested sequences included.

    Private elements are read too when their VR says what they are (PN, DA), since vendors put
    copies of the patient's name and dates there.
    """
    found = StudyIdentifiers()

    def visit(dataset: Dataset) -> None:
        for element in dataset:
            vr = element.VR
            keyword = element.keyword or ""
            if vr == "SQ":
                for item in element.value or []:
                    visit(item)
                continue
            if element.tag.group == 0x7FE0 or vr in ("OB", "OW", "OF", "OD", "OL", "OV", "UN", "SS", "US", "SL", "UL", "FL", "FD"):
                continue
            values = _values(element.value)
            if vr == "PN":
                for value in values:
                    parts = _person_parts(value)
                    if parts.words or parts.scripts:
                        found.names.append(parts)
            elif vr in ("DA", "DT"):
                for value in values:
                    parsed = _date_of(value)
                    if parsed is not None:
                        found.dates.add(parsed)
            elif keyword in _PHONE_KEYWORDS:
                for value in values:
                    digits = re.sub(r"\D", "", value)
                    if len(digits) >= 6:
                        found.phones.add(digits)
            elif keyword in _TELECOM_KEYWORDS:
                for value in values:
                    for piece in re.split(r"[\s,;]+", value):
                        if "@" in piece:
                            found.emails.add(piece.strip())
                        elif len(re.sub(r"\D", "", piece)) >= 6:
                            found.phones.add(re.sub(r"\D", "", piece))
            elif keyword in _ADDRESS_KEYWORDS:
                found.addresses.update(v.strip() for v in values)
            elif keyword in _INSTITUTION_KEYWORDS:
                found.institutions.update(v.strip() for v in values)
            elif keyword in _ID_KEYWORDS and keyword not in _NOT_IDENTIFIERS:
                found.ids.update(v.strip() for v in values)
            elif vr in ("LO", "SH") and keyword and (keyword.endswith(("ID", "IDs", "Identifier")) or "OrderNumber" in keyword):
                found.ids.update(v.strip() for v in values)

    visit(header)
    return found


def identifiers_from_headers(headers: Iterable[Dataset]) -> StudyIdentifiers:
    """The union of `identifiers_from_header` over several headers (a study's series)."""
    merged = StudyIdentifiers()
    for header in headers:
        merged.merge(identifiers_from_header(header))
    return merged


# --------------------------------------------------------------------------- patterns

_MONTHS = [
    "January", "February", "March", "April", "May", "June", "July", "August", "September", "October", "November", "December",
]
_MONTH_ABBREVIATIONS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Sept", "Oct", "Nov", "Dec"]
_MONTH = (
    r"(?:(?i:january|february|march|april|june|july|august|september|october|november|december)"
    r"|May|MAY|(?:Jan|Feb|Mar|Apr|Jun|Jul|Aug|Sept|Sep|Oct|Nov|Dec|JAN|FEB|MAR|APR|JUN|JUL|AUG|SEPT|SEP|OCT|NOV|DEC)\.?)"
)
_DAY = r"(?:[12]\d|3[01]|0?[1-9])(?:st|nd|rd|th)?"
_YEAR = r"(?:1[89]\d\d|20\d\d)"

_PATTERNS: list[tuple[str, re.Pattern[str]]] = [
    (EMAIL, re.compile(r"(?<![\w.+-])[\w.+-]+@[\w-]+(?:\.[\w-]+)*\.[A-Za-z]{2,}")),
    (URL, re.compile(r"(?i)\b(?:https?://|ftp://|www\.)[^\s<>\"']+[^\s<>\"'.,;:!?)\]]")),
    (IP, re.compile(r"(?<![\w.])(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(?![\w.]|\.\d)")),
    (IP, re.compile(r"(?<![\w:])(?:[0-9A-Fa-f]{1,4}:){7}[0-9A-Fa-f]{1,4}(?![\w:])")),
    (IP, re.compile(r"(?<![\w:])(?:[0-9A-Fa-f]{1,4}:){1,6}:[0-9A-Fa-f]{1,4}(?::[0-9A-Fa-f]{1,4}){0,5}(?![\w:])")),
    (ID, re.compile(r"(?<!\d)\d{3}-\d{2}-\d{4}(?!\d)")),  # SSN
    (PHONE, re.compile(r"(?<![\w+])(?:\+\d{1,3}[\s.-]?)?(?:\(\d{1,4}\)[\s.-]?|\d{2,4}[\s.-])\d{3,4}[\s.-]\d{3,5}(?![\w-]|\.\d)")),
    (PHONE, re.compile(r"(?<![\w+])\+\d{1,3}(?:[\s.-]?\d{2,5}){2,5}(?![\w-])")),
    (PHONE, re.compile(r"(?i)\b(?:tel|telephone|phone|ph|fax|mobile|cell|mob|pager|bleep|ext|call)\b\.?\s*(?:no\.?|number|#)?\s*[:.]?\s*(\+?[\d(][\d\s().-]{4,}\d)")),
    (DATE, re.compile(r"(?<![\w./-])(?:[12]\d|3[01]|0?[1-9])[/.-](?:1[0-2]|0?[1-9])[/.-](?:\d{4}|\d{2})(?![\w/-]|\.\d)")),
    (DATE, re.compile(r"(?<![\w./-])(?:1[0-2]|0?[1-9])[/.-](?:[12]\d|3[01]|0?[1-9])[/.-](?:\d{4}|\d{2})(?![\w/-]|\.\d)")),
    (DATE, re.compile(rf"(?<![\w./-]){_YEAR}[/.-](?:1[0-2]|0?[1-9])[/.-](?:[12]\d|3[01]|0?[1-9])(?![\w/-]|\.\d)")),
    (DATE, re.compile(rf"(?<![\w.]){_YEAR}(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])(?![\w.])")),
    (DATE, re.compile(rf"\b{_DAY}(?:\s+of)?[\s/-]+{_MONTH}(?:,?[\s/-]+(?:{_YEAR}|'?\d\d))?(?![\w-])")),
    (DATE, re.compile(rf"\b{_MONTH}[\s/-]+{_DAY}(?:,?[\s/-]+(?:{_YEAR}|'\d\d))?(?![\w-])")),
    (DATE, re.compile(rf"\b{_MONTH},?[\s/-]+{_YEAR}\b")),
    (DATE, re.compile(rf"(?<![\w./-])(?:1[0-2]|0?[1-9])/{_YEAR}(?![\w/])")),
    (AGE, re.compile(r"(?i)\b(?:aged?|age\s*[:=]|age\s+of)\s*(9\d|1[0-4]\d)\b")),
    (AGE, re.compile(r"(?i)\b(9\d|1[0-4]\d)\s*(?:-\s*)?(?:years?|yrs?|y/o|y\.o\.|yo|y)(?:\s*-?\s*old)?\b")),
    (AGE, re.compile(r"(?i)\b(?:nonagenarian|centenarian)\b")),
    (ADDRESS, re.compile(
        r"(?<![\w.])\d{1,6}[A-Za-z]?(?:-\d{1,4})?\s+(?:[A-Z][\w'’.-]*\s+){0,4}?"
        r"(?:Street|St|Avenue|Ave|Road|Rd|Boulevard|Blvd|Lane|Ln|Drive|Dr|Court|Ct|Way|Place|Pl|Terrace|Ter|Parkway|Pkwy"
        r"|Circle|Cir|Highway|Hwy|Square|Sq|Trail|Trl|Crescent|Cres|Close|Gardens|Row|Alley|Plaza|Strasse|Straße|Str|Weg|Allee|Platz|Gasse)"
        r"\b(?:\.?,?\s*(?:Apt|Apartment|Suite|Ste|Unit|Flat|Floor|#)\.?\s*#?[\w-]+)?"
        r"(?:\.?,\s*[A-Z][\w'’-]+(?:\s+[A-Z][\w'’-]+){0,2})?(?:,?\s*[A-Z]{2}(?![\w]))?(?:\s+\d{5}(?:-\d{4})?)?"
    )),
    (ADDRESS, re.compile(r"(?i)\b(?:P\.?\s?O\.?\s*Box|Postfach)\s*\d+")),
    (ADDRESS, re.compile(r"\b[A-Z]{2}\s+\d{5}(?:-\d{4})?\b")),  # US state + ZIP
    (ADDRESS, re.compile(r"\b[A-Z]{1,2}\d[A-Z\d]?\s+\d[ABD-HJLNP-UW-Z]{2}\b")),  # UK postcode
    (ID, re.compile(
        r"(?i)\b(?:MRN|MR#|medical\s+record(?:\s+(?:number|no\.?|#))?|record\s+(?:number|no\.?|#)|patient\s+id|pt\s+id"
        r"|hospital\s+(?:number|no\.?)|accession(?:\s+(?:number|no\.?|#))?|acc(?:\.|\s+(?:number|no\.?|#))|case\s+(?:number|no\.?|#)"
        r"|chart\s+(?:number|no\.?|#)|account\s+(?:number|no\.?|#)|SSN|NHS\s*(?:number|no\.?)?|insurance\s+(?:id|number|no\.?)"
        r"|policy\s+(?:number|no\.?)|member\s+id)\s*[:#]?\s*([A-Z0-9][A-Z0-9/-]*\d[A-Z0-9/-]*)"
    )),
    (ID, re.compile(r"(?i)\b(?:ID|no\.|#)\s*[:#]?\s*((?=[A-Z0-9/-]{4,})[A-Z0-9][A-Z0-9/-]*\d[A-Z0-9/-]*)")),
    (ID, re.compile(r"(?<![\w.])[0-2](?:\.(?:0|[1-9]\d*)){4,}(?![\w.]|\.\d)")),  # DICOM / OID UIDs
    (ID, re.compile(r"(?<![\w.])\d{6,}(?![\w]|\.\d)")),
    (ID, re.compile(r"(?<![\w.])(?=[A-Za-z0-9-]*\d{5})[A-Za-z]{1,5}-?\d{5,}[A-Za-z]{0,3}(?![\w])")),
    (ID, re.compile(r"(?<![\w.])\d{5,}[A-Za-z]{1,3}(?![\w])")),
    (ID, re.compile(r"(?<![\d.,])\d{3}[ \u2013\u2014-]\d{2}[ \u2013\u2014-]\d{4}(?![\d.,])")),  # SSN with spaces or dashes
    (ID, re.compile(r"(?i)\bSSN\b\s*[:#]?\s*(\d{9})\b")),
]

# A phone number of any country: digit groups with separators, an optional +/00 prefix, an optional
# extension. Checked in `_phone_spans` (7 to 15 digits, not a date or a measurement).
_PHONE_SHAPE = re.compile(
    r"(?<![\w+/.,-])(?:\+\s?|00)?\(?\d[\d\s().\-/]{4,20}\d(?:\s*\(?(?i:x|ext\.?|extension|#)\s*\d{1,6}\)?)?(?![\w/]|[.,]\d)"
)
_SSN_SHAPE = re.compile(r"\d{3}[ \u2013\u2014-]\d{2}[ \u2013\u2014-]\d{4}")
_PHONE_EXTENSION = re.compile(r"(?i)(?:x|ext\.?|extension|#)\s*\d{1,6}\)?$")

# Street words that end a street name, from the USPS list of standard suffixes and the common
# British and Irish ones (PS28 Appendix C1, written out and abbreviated).
STREET_SUFFIXES = (
    "Alley Aly Annex Anx Arcade Arc Avenue Ave Av Bayou Byu Beach Bch Bend Bnd Bluff Blf Bluffs Blfs Bottom Btm Boulevard Blvd "
    "Branch Br Bridge Brg Brook Brk Brooks Brks Burg Bg Burgs Bgs Bypass Byp Camp Cp Canyon Cyn Cape Cpe Causeway Cswy "
    "Center Ctr Centre Centers Ctrs Circle Cir Circles Cirs Cliff Clf Cliffs Clfs Close Club Clb Common Cmn Commons Cmns "
    "Corner Cor Corners Cors Course Crse Court Ct Courts Cts Cove Cv Coves Cvs Creek Crk Crescent Cres Crest Crst Crossing "
    "Xing Crossroad Xrd Crossroads Xrds Curve Curv Dale Dl Dam Dm Divide Dv Drive Dr Drives Drs Estate Est Estates Ests "
    "Expressway Expy Extension Ext Extensions Exts Falls Fls Fall Ferry Fry Field Fld Fields Flds Flat Flt Flats Flts Ford "
    "Frd Fords Frds Forest Frst Forge Frg Forges Frgs Fork Frk Forks Frks Fort Ft Freeway Fwy Garden Gdn Gardens Gdns "
    "Gateway Gtwy Glen Gln Glens Glns Green Grn Greens Grns Grove Grv Groves Grvs Harbor Hbr Harbour Harbors Hbrs Haven Hvn "
    "Heights Hts Highway Hwy Hill Hl Hills Hls Hollow Holw Inlet Inlt Island Is Islands Iss Isle Junction Jct Junctions "
    "Jcts Key Ky Keys Kys Knoll Knl Knolls Knls Lake Lk Lakes Lks Land Landing Lndg Lane Ln Light Lgt Lights Lgts Loaf "
    "Lf Lock Lck Locks Lcks Lodge Ldg Loop Mall Manor Mnr Manors Mnrs Meadow Mdw Meadows Mdws Mews Mill Ml Mills Mls "
    "Mission Msn Motorway Mtwy Mount Mt Mountain Mtn Mountains Mtns Neck Nck Orchard Orch Oval Overpass Opas Park Prk Parks "
    "Parkway Pkwy Parkways Pass Passage Psge Path Pike Pine Pne Pines Pnes Place Pl Plain Pln Plains Plns Plaza Plz Point "
    "Pt Points Pts Port Prt Ports Prts Prairie Pr Radial Radl Ramp Ranch Rnch Rapid Rpd Rapids Rpds Rest Rst Ridge Rdg "
    "Ridges Rdgs River Riv Road Rd Roads Rds Route Rte Row Rue Run Shoal Shl Shoals Shls Shore Shr Shores Shrs Skyway Skwy "
    "Spring Spg Springs Spgs Spur Spurs Square Sq Squares Sqs Station Sta Stravenue Stra Stream Strm Street St Streets Sts "
    "Summit Smt Terrace Ter Throughway Trwy Trace Trce Track Trak Trafficway Trfy Trail Trl Trailer Trlr Tunnel Tunl "
    "Turnpike Tpke Underpass Upas Union Un Unions Uns Valley Vly Valleys Vlys Viaduct Via View Vw Views Vws Village Vlg "
    "Villages Vlgs Ville Vl Vista Vis Walk Walks Wall Way Ways Well Wl Wells Wls Wynd"
).split()
#: Suffixes that are also ordinary words ("2 Views", "6/10 at rest"): an address with one needs a unit or a town after it.
WORDY_SUFFIXES = frozenset(
    "View Views Vw Rest Run Pass Path Key Keys Well Wells Wall Light Lights Lock Locks Loaf Course Common Commons Union Unions "
    "Track Trace Station Point Points Port Ports Land Fall Falls Camp Club Neck Spur Spurs Shore Shores Rapid Rapids Radial "
    "Ramp Mission Cape Bend Bottom Branch Divide Fork Forks Mall Oval Pike Pine Pines Plain Plains Ranch Ridge Ridges Spring "
    "Springs Stream Summit Square Squares Walk Walks Field Fields Flat Flats Green Greens Hill Hills Lake Lakes Mount Park "
    "Parks Place Row Way Ways Is Pt Pr Un Vl Dl Lf Ml Wl St Dr Ct Cv Un".split()
)


def _suffix_alternation(suffixes: Iterable[str]) -> str:
    """Title-case and capitalised forms of street suffixes, longest first."""
    forms = {form for suffix in suffixes for form in (suffix, suffix.upper())}
    return "|".join(sorted(forms, key=len, reverse=True))


_STREET_SUFFIX = _suffix_alternation(s for s in STREET_SUFFIXES if s not in WORDY_SUFFIXES)
_WORDY_SUFFIX = _suffix_alternation(WORDY_SUFFIXES)
# Street words written into the name (German, Dutch, Nordic, Finnish, Hungarian, Turkish, ...).
_ATTACHED_STREET = (
    r"(?:stra(?:ss|ß)e|str\.|weg|gasse|allee|platz|ring|damm|ufer|chaussee|steig|pfad|laan|straat|gracht|plein|singel|kade|dijk"
    r"|hof|markt|vej|gade|gate|gata|gatan|vägen|väg|torget|torg|gränd|gränden|backe|backen|stig|stigen|leden|allén|plan|katu|tie|kuja"
    r"|polku|kaari|rinne|utca|körút|sokak"
    r"|sokağı|caddesi|cad\.|bulvarı|ulice|náměstí|třída|nábřeží)"
)
# Street words written before the name (French, Spanish, Italian, Portuguese, Polish, ...).
_LEADING_STREET = (
    r"(?:rue|avenue|av\.|bd|boulevard|chemin|allée|impasse|place|quai|cours|route|calle|c/|avenida|avda\.?|paseo|plaza|pasaje"
    r"|camino|carrer|ronda|callejón|cañada|glorieta|travesía|rambla|carretera|urbanización|acceso|cuesta|polígono|barrio|avinguda"
    r"|passeig|c\.|via|viale|piazza|piazzale|corso|largo"
    r"|vicolo|contrada|strada|borgo|rotonda|rua|travessa|praça|alameda|estrada"
    r"|ul\.|ulica|aleja|al\.|plac|osiedle|os\.)"
)
_UPPER = "A-ZÀ-ÖØ-ÞĀĂĄĆĈĊČĎĐĒĔĖĘĚĜĞĠĢĤĦĨĪĬĮİĴĶĹĻĽĿŁŃŅŇŊŌŎŐŒŔŖŘŚŜŞŠŢŤŦŨŪŬŮŰŲŴŶŸŹŻŽ"
_CAP = rf"[{_UPPER}][\w'’.-]*"
_LINK = r"(?:de|del|de la|de las|de los|des|du|la|le|les|di|da|dos|das|della|do|van|von|der|den|y|e|i)"
_POSTCODE = r"(?:\d{2}-\d{3}|\d{3}\s\d{2}|\d{4,6}|[A-Z]{1,2}\d[A-Z\d]?\s*\d[A-Z]{2}|\d{4}\s?[A-Z]{2})"
_TOWN_WORD = rf"[{_UPPER}][\w'’-]*"
_TOWN = rf"{_TOWN_WORD}(?:\s+(?:{_LINK}\s+)?{_TOWN_WORD}){{0,2}}(?:,?\s+[A-Z]{{2}})?(?:,?\s+\(?[A-Z]{{2}}\)?)?(?:\s+\d{{5}}(?:-\d{{4}})?)?"
# What may follow a street: a unit, then ", town", "/ postcode town", ", postcode, town (XX)", ", XX 12345".
_CITY_TAIL = (
    r"(?:,?\s+(?i:(?:Apt|Apartment|Suite|Ste|Unit|Flat|Floor|Piso|Planta|Puerta|Piano|Interno|Scala|Appartamento|Étage|Etage|Stock|Bus)\.?\s*#?[\w-]+))?"
    rf"(?:(?:\s*[,/\n]\s*|\s+(?={_POSTCODE}\b))(?:{_POSTCODE}\b,?\s*)?{_TOWN}(?:,?\s*{_POSTCODE}\b)?|\s*,\s*{_POSTCODE}\b(?:,?\s*{_TOWN})?)?"
)
_STREET_WORD = re.compile(rf"(?i:{_LEADING_STREET})")
_ADDRESS_PATTERNS = [
    # 12 Canary Street, 77763 Tony Village Suite 690, 221B Baker St, New Jeffreymouth, NM 72965
    re.compile(
        rf"(?<![\w./])(?:(?i:Studio|Flat|Apartment|Apt\.?|Unit|Suite|H\.\s?No\.?|House\s+No\.?)\s*\d{{1,4}}[A-Za-z]?,?\s+(?:\d{{1,6}}[A-Za-z]?,?\s+)?"
        rf"|\d{{1,6}}[A-Za-z]?(?:[-/]\d{{1,4}})?,?\s+)"
        rf"(?:{_CAP}\s+){{0,4}}?(?:{_STREET_SUFFIX})\b\.?"
        rf"(?:,?\s*(?i:Apt|Apartment|Suite|Ste|Unit|Flat|Floor|\#)\.?\s*\#?[\w-]+)?" + rf"{_CITY_TAIL}"
    ),
    # 17 Jones Light, 6907 Gül Unions: a suffix that is also a word, so a unit or a town must follow
    re.compile(
        rf"(?<![\w./])(?:(?i:H\.\s?No\.?|House\s+No\.?)\s*)?\d{{1,6}}[A-Za-z]?(?:[-/]\d{{1,4}})?,?\s+(?:{_CAP}\s+){{1,4}}?(?:{_WORDY_SUFFIX})\b\.?"
        rf"(?:,?\s*(?i:Apt|Apartment|Suite|Ste|Unit|Flat|Floor|\#)\.?\s*\#?[\w-]+|(?=\s*[,\n]\s*{_CAP}))" + rf"{_CITY_TAIL}"
    ),
    # 16315 Bradley Walk, Flat 21 Brenda Walks: a house number of two digits or more, or a flat, before it
    re.compile(
        rf"(?<![\w./])(?:(?i:Studio|Flat|Apartment|Apt\.?|Unit|Suite)\s*\d{{1,4}}[A-Za-z]?,?\s+|\d{{2,6}}[A-Za-z]?,?\s+)"
        rf"(?:{_CAP}\s+){{1,4}}?(?:{_WORDY_SUFFIX})\b"
    ),
    # Heydukova 67, 166 20 Dašice; Canale Muti, 930, 95013, Fiumefreddo di Sicilia (CT): street, number, postcode, town
    re.compile(
        rf"(?<![\w.]){_TOWN_WORD}(?:\s+(?:{_LINK}\s+)?{_TOWN_WORD}){{0,3}},?\s+\d{{1,5}}[A-Za-z]?(?:/\d{{1,4}})?"
        rf"(?:\s+(?i:Piano|Appartamento|Interno|Piso|Puerta|Apt\.?|Flat)\s*\d{{1,4}})?,\s*{_POSTCODE}\b,?\s*{_TOWN}"
    ),
    # Musterstraße 12, Skolvägen 76, Agnes-Wesack-Straße 26-83 / 39150 Auerbach
    re.compile(rf"(?<![\w.])(?:[{_UPPER}][\w'’.-]*[\s-])?[{_UPPER}][\w'’-]*(?i:{_ATTACHED_STREET})\s+\d{{1,5}}[A-Za-z]?(?:\s?[-/]\s?\d{{1,5}}[A-Za-z]?)?{_CITY_TAIL}"),
    # 23, rue Victoire Perrier; Viale Sermonti, 13; Calle Mayor 5; aleja Okrężna 776
    re.compile(
        rf"(?<![\w.])(?:\d{{1,5}}[A-Za-z]?,?\s+)?(?i:{_LEADING_STREET})\s+(?:(?:{_LINK})\s+)*{_TOWN_WORD}(?:\s+(?:(?:{_LINK})\s+)*{_TOWN_WORD}){{0,4}}"
        rf"(?:,?\s+(?:n\.?\s*|nº\s*|no\.?\s*)?\d{{1,4}}[A-Za-z]?(?!\d))?{_CITY_TAIL}"
    ),
    # Dózsa György utca 193, Atatürk Caddesi 12, Kadakia Marg 77
    re.compile(
        rf"(?<![\w.])(?:\d{{1,5}}[A-Za-z]?(?:/\d{{1,5}})?,?\s+)?{_CAP}(?:\s+[\w'’.-]+){{0,3}}?\s+"
        rf"(?i:utca|út|útja|tér|köz|sor|sokak|sokağı|caddesi|cad\.|bulvarı|mahallesi|marg|nagar|ganj|chowk|gali|ulice|nábřeží)\b"
        rf"(?:\s+\d{{1,5}}[A-Za-z]?\.?)?{_CITY_TAIL}"
    ),
    # Words that say the rest of the clause is an address: "lives at ...", "address: ..."
    re.compile(r"(?i:\b(?:lives|living|resides|residing|resident)\s+at|\b(?:home\s+)?address\s*[:\-]?)\s+((?:[^;.,\n]|,(?!\s*[a-z])|\.(?=\w)){1,80}(?<=\w))"),
]

# Hospitals and clinics: capitalised words before a kind of institution, or after one written first.
_INSTITUTION_KIND = (
    r"(?i:Hospital|Hospitals|Infirmary|Clinic|Clinics|Medical\s+Cent(?:er|re)|Health\s+Cent(?:er|re)|Healthcare|Health\s+System"
    r"|Hospice|Sanatorium|Polyclinic|Klinikum|Klinik|Kliniken|Krankenhaus|Spital|Hôpital|Clinique|Ospedale|Policlinico"
    r"|Ziekenhuis|Szpital|Sjukhus|Sairaala|Nemocnice|Kórház|Hastanesi|Universitätsklinikum|Uniklinik|CHU|CHRU)"
)
#: Words that start a clause before a hospital's name ("TRANSFERRED FROM X HOSPITAL"), never part of it;
#: ordinary words that name places and people ("South", "New", "Taylor") are not among them.
_NOT_PLACE_NAMES = (NOT_NAMES - COMMON_WORDS) | frozenset(
    "a an the and or of in on at to for with by from as is was be are no not yes left right".split()
)
_INSTITUTION_PATTERNS = [
    re.compile(
        rf"(?<![\w])(?:(?:St|Saint|Sankt|San|Santa|São)\.?\s+)?(?:(?:St\.|{_TOWN_WORD})\s+|(?:of|de|du|di|del|am|an der|nad|pod|na|upon|on|en|sur|im|bei)\s+){{0,4}}{_INSTITUTION_KIND}\b"
        rf"(?:\s+(?:of|de|du|des|di|del|della|do|da|am|an\s+der|für)\s+{_CAP}(?:\s+{_CAP}){{0,2}})?"
    ),
    re.compile(
        rf"\b(?:Klinikum|Klinik|Krankenhaus|Hôpital|Clinique|Ospedale|Hospital|Centre\s+Hospitalier(?:\s+Universitaire)?|Szpital|Policlinico"
        rf"|University\s+Hospital|CHU)\s+(?:(?:of|de|du|des|di|del|della|do|da|San|Santa|St\.?|Saint)\s+)*{_CAP}(?:\s+{_CAP}){{0,2}}"
    ),
]

# A title followed by one or two capitalised words (and initials): a name, whoever it is.
_TITLED_NAME = re.compile(
    r"(?:\b(?:Dr|Mr|Mrs|Ms|Miss|Mx|Prof|DR|MR|MRS|MS|MISS|PROF)\b\.?|\b(?:Professor|Sir|Dame|Nurse|Sister|NURSE|SISTER)\b)[ \t]+"
    r"((?:[A-Z]\.\s*)*[A-Z][\w'’-]*(?:\s+(?:[A-Z]\.\s*)*[A-Z][\w'’-]+)?)"
)
# A name introduced by a role word and a colon ("Patient: Jones", "Next of kin: Mary Smith").
_ROLE_NAME = re.compile(
    r"(?i:\b(?:patient|pt|name|patient\s+name|mother|father|son|daughter|wife|husband|partner|sister|brother|guardian"
    r"|carer|contact|next\s+of\s+kin|referrer|referring\s+physician|physician|radiologist|surgeon|consultant|gp)\b)"
    r"\s*:\s*((?:[A-Z]\.\s*)*[A-Z][\w'’-]+(?:[ ,]+(?:[A-Z]\.\s*)*[A-Z][\w'’-]+)?)"
)
_CAPITAL_WORD = re.compile(r"[A-Z][\w'’-]*")


# --------------------------------------------------------------------------- the scrubber


@dataclass(frozen=True)
class ScrubResult:
    """Scrubbed text and how many spans of each category were redacted."""

    text: str
    counts: dict[str, int]

    @property
    def total(self) -> int:
        return sum(self.counts.values())


@dataclass(frozen=True)
class _Span:
    start: int
    end: int
    category: str


def _flexible(value: str, *, separators: str = r"[\s\-./_]*") -> str:
    """A regex that matches `value`'s letters and digits with any separators between them."""
    chars = [re.escape(ch) for ch in value if ch.isalnum()]
    return separators.join(chars)


_MONTH_NUMBERS = {fold(name): number for number, name in enumerate(_MONTHS, start=1)}
_MONTH_NUMBERS.update({fold(name): number for number, name in enumerate(_MONTH_ABBREVIATIONS, start=1) if name != "Sept"})
_MONTH_NUMBERS["sept"] = 9


def _safe_date(year: int, month: int, day: int) -> date | None:
    try:
        return date(year, month, day)
    except ValueError:
        return None


def _years(text: str) -> list[int]:
    value = int(text)
    return [value] if len(text) == 4 else [1900 + value, 2000 + value]


def dates_in(text: str) -> set[date]:
    """Every calendar date a written date could mean (day/month order is ambiguous, so both).

    Understands digit runs (YYYYMMDD, DDMMYYYY, MMDDYYYY, DDMMYY, MMDDYY, YYMMDD), numbers with
    separators in any order, and forms with month names ("23 Apr 1961", "April 23rd, 1961").
    """
    found: set[date] = set()
    compact = re.sub(r"[\s'’]", "", text)
    if compact.isdigit():
        if len(compact) == 8:
            candidates = [(compact[:4], compact[4:6], compact[6:]), (compact[4:], compact[2:4], compact[:2]), (compact[4:], compact[:2], compact[2:4])]
        elif len(compact) == 6:
            candidates = [(compact[4:], compact[2:4], compact[:2]), (compact[4:], compact[:2], compact[2:4]), (compact[:2], compact[2:4], compact[4:])]
        else:
            candidates = []
        for y, m, d in candidates:
            for year in _years(y):
                found.add(_safe_date(year, int(m), int(d)))
        found.discard(None)
        return found
    words = re.findall(r"[A-Za-z]+|\d+", text)
    month_words = [_MONTH_NUMBERS[fold(w)] for w in words if fold(w) in _MONTH_NUMBERS]
    numbers = [w for w in words if w.isdigit()]
    if month_words and numbers:
        month = month_words[0]
        days = [n for n in numbers if len(n) <= 2 and 1 <= int(n) <= 31]
        years = [n for n in numbers if len(n) == 4] or [n for n in numbers[1:] if len(n) == 2]
        for d in days[:1] or []:
            for y in years[:1]:
                for year in _years(y):
                    found.add(_safe_date(year, month, int(d)))
    elif len(numbers) == 3:
        first, second, third = numbers
        if len(first) == 4:
            found.add(_safe_date(int(first), int(second), int(third)))
        elif len(third) in (2, 4):
            for year in _years(third):
                found.add(_safe_date(year, int(second), int(first)))
                found.add(_safe_date(year, int(first), int(second)))
    found.discard(None)
    return found


# Where a date may be written: the DATE patterns above plus bare runs of 6 or 8 digits.
_DATE_CANDIDATES = [pattern for category, pattern in _PATTERNS if category == DATE] + [
    re.compile(r"(?<![\w.])(?:\d{8}|\d{6})(?![\w]|\.\d)")
]


def _alternation(patterns: Iterable[str]) -> re.Pattern[str] | None:
    """One case-insensitive regex matching any of `patterns` (longest first), or None if there are none."""
    unique = sorted({p for p in patterns if p}, key=len, reverse=True)
    return re.compile("|".join(f"(?:{p})" for p in unique), re.IGNORECASE) if unique else None


#: Words that are never taken as part of a name found in free text, even next to one: laterality,
#: body parts and findings whose loss would change the meaning of a clinical sentence.
SIDES_AND_BODY = frozenset(
    """
    l r left right bilateral hand hands foot feet head neck chest back arm arms leg legs knee knees hip hips face eye eyes
    ear ears nose mouth lip lips skin bone bones heart lung lungs liver kidney brain spine wall walls palm palms thumb
    """.split()
)
NEVER_NAMES = SIDES_AND_BODY | frozenset(
    """
    burn burns scald wound wounds scar mass stone stones lesion cyst nodule node fracture cast pin plate screw wire
    white black brown grey gray green red blue yellow rose
    """.split()
)


@dataclass(frozen=True)
class _Word:
    """A word of free text, as the name finder sees it."""

    index: int
    folded: str
    stop: bool  # an ordinary or clinical word, a title, or an eponym: never a name alone
    capital: bool  # capitalised (in text written in capitals: always)
    starts: bool  # first word of a sentence
    given: bool  # a listed given name that is not an ordinary word
    family: bool  # a listed surname that is not an ordinary word
    listed_word: bool  # a listed name that is also an ordinary word ("Hall", "Jack")
    dicom: bool  # a word of a DICOM attribute name ("Pixel", "Interpretation"): not evidence of a name

    @classmethod
    def of(cls, text: str, token: re.Match[str], index: int, upper_text: bool, given: frozenset[str], family: frozenset[str]) -> "_Word":
        word = re.sub(r"['’]s$", "", token.group())
        folded = fold(word)
        eponym = bool(_EPONYM_AFTER.match(text[token.end() : token.end() + 40]))
        camel = bool(re.search(r"[a-z][A-Z]", word)) and not re.match(r"(?:Mc|Mac|De|Di|Da|Du|La|Le|Van|Von|O)[A-Z]", word)
        stop = folded in NOT_NAMES or folded in PRODUCT_WORDS or folded in TITLES or eponym or len(folded) < 2 or word in dicom_keywords() or camel
        listed = folded in given or folded in family
        return cls(
            index=index,
            folded=folded,
            stop=stop,
            # capitalised; in mixed-case text acronyms ("MRN", "UIDs", "UUID-derived") are not
            capital=word[:1].isupper() and (upper_text or not word[1:2].isupper() or len(word) == 1),
            starts=index == 0 or bool(_SENTENCE_START.search(text[max(0, token.start() - 3) : token.start()])),
            given=not stop and folded in given,
            family=not stop and folded in family,
            listed_word=listed and not eponym and len(folded) >= 3,
            dicom=folded in dicom_words(),
        )


class TextScrubber:
    """Redacts a study's known identifiers and PHI-shaped patterns from free text.

    Build one per study (`TextScrubber(identifiers_from_headers(...))`) and call `scrub(text)`
    for each piece of text; `TextScrubber()` without identifiers applies the patterns only.
    """

    def __init__(self, identifiers: StudyIdentifiers | None = None, *, patterns: bool = True):
        self.identifiers = identifiers or StudyIdentifiers()
        self.patterns = patterns
        ids = self.identifiers
        self._name_words: set[str] = set()
        self._name_initials: set[str] = set()
        self._scripts: list[str] = []
        for person in ids.names:
            self._name_words |= person.words
            self._name_initials |= person.initials
            self._scripts.extend(person.scripts)
        # a word is unambiguous if it is neither a common word nor a particle
        self._first_letters = {w[0] for w in self._name_words} | self._name_initials
        self._ambiguous = {w for w in self._name_words if w in NOT_NAMES or w in PARTICLES or len(w) <= 2}
        # people whose every word is ambiguous still need at least two of their words together
        self._scripts = sorted({s for s in self._scripts if len(s) >= 2 or len(self._scripts) == 1}, key=len, reverse=True)
        self._literals = self._literal_patterns()

    def _literal_patterns(self) -> list[tuple[str, re.Pattern[str]]]:
        """One combined regex per category for the header's IDs, phones, places and e-mail addresses."""
        ids = self.identifiers
        start, end = r"(?<![^\W_])", r"(?![^\W_])"
        id_patterns: list[str] = []
        for value in ids.ids:
            alnum = "".join(ch for ch in value if ch.isalnum())
            if len(alnum) < 3 or (alnum.isalpha() and fold(alnum) in COMMON_WORDS):
                continue
            id_patterns.append(start + _flexible(value) + end)
            for run in re.findall(r"\d{5,}", value):
                id_patterns.append(r"(?<!\d)" + re.escape(run) + r"(?!\d)")
                if len(run.lstrip("0")) >= 5:
                    id_patterns.append(r"(?<!\d)" + re.escape(run.lstrip("0")) + r"(?!\d)")
        phone_patterns: list[str] = []
        for digits in ids.phones:
            phone_patterns.append(r"(?<!\d)" + r"[\s\-.()/]*".join(digits) + r"(?!\d)")
            if len(digits) >= 10:
                phone_patterns.append(r"(?<!\d)" + r"[\s\-.()/]*".join(digits[-7:]) + r"(?!\d)")
        place_patterns: dict[str, list[str]] = {ADDRESS: [], INSTITUTION: []}
        for category, values in ((ADDRESS, ids.addresses), (INSTITUTION, ids.institutions)):
            pieces: set[str] = set()
            for value in values:
                pieces.add(value)
                pieces.update(p.strip() for p in re.split(r"[,\n\r^;]+", value))
            for piece in pieces:
                words = _WORD.findall(piece)
                if not words or len(piece) < 4 or (len(words) == 1 and fold(words[0]) in COMMON_WORDS):
                    continue
                place_patterns[category].append(start + r"[\s,.'’-]+".join(re.escape(w) for w in words) + end)
        found = [
            (category, _alternation(patterns))
            for category, patterns in (
                (ID, id_patterns),
                (PHONE, phone_patterns),
                (ADDRESS, place_patterns[ADDRESS]),
                (INSTITUTION, place_patterns[INSTITUTION]),
                (EMAIL, [re.escape(e) for e in ids.emails]),
            )
        ]
        return [(category, pattern) for category, pattern in found if pattern is not None]

    # ------------------------------------------------------------------ span finders

    def _name_spans(self, text: str) -> Iterator[_Span]:
        """Name words of the study's people; ambiguous ones only in a name context."""
        if not self._name_words and not self._scripts:
            return
        tokens = [(m.start(), m.end(), fold(m.group())) for m in _WORD.finditer(text)] if self._name_words else []
        hits = {index for index, (_, _, folded) in enumerate(tokens) if folded in self._name_words}
        for index in sorted(hits):
            start, end, folded = tokens[index]
            if folded in self._ambiguous and not self._name_context(text, tokens, index, hits):
                continue
            yield _Span(start, end, NAME)
        for script in self._scripts:
            position = text.find(script)
            while position >= 0:
                yield _Span(position, position + len(script), NAME)
                position = text.find(script, position + len(script))

    def _name_context(self, text: str, tokens: list[tuple[int, int, str]], index: int, hits: set[int]) -> bool:
        """Whether an ambiguous name word stands where a name would.

        That is: next to another word of the study's names ("Grace Hope", "HOPE, GRACE", "Grace J
        Hope"), after a title ("Mrs Hope") or one of the names' initials ("G. Hope"), capitalised
        after "by", "per", "cc", "Dear", "Attn" ("seen by Hope"), or in capitals inside text that
        is not in capitals ("HOPE was admitted"). Elsewhere ("Hope the mass resolves", "Burn of a
        special area") it is read as a word.
        """
        start, end, folded = tokens[index]
        for step in (-1, 1):
            neighbour = index + step
            while 0 <= neighbour < len(tokens) and len(tokens[neighbour][2]) == 1:  # skip initials ("Rose J Smith")
                neighbour += step
            if neighbour not in hits:
                continue
            other_start, other_end, other = tokens[neighbour]
            between = text[other_end:start] if neighbour < index else text[end:other_start]
            if re.search(r"[.!?;:]\s", between + " ") and not re.fullmatch(r"\s*[A-Z]\.\s*", between):
                continue  # a sentence ends between them: "no renal stone. Faith Stone"
            if text[start:end].islower() and not text[other_start:other_end].islower():
                continue  # a word in lower case next to a capitalised name is a word
            if other != folded and len(between) <= 8 and _is_name_gap(between):
                return True
        if index > 0:
            previous_start, previous_end, previous = tokens[index - 1]
            gap = text[previous_end:start]
            if previous in TITLES and len(gap) <= 3 and _NAME_GLUE.match(gap):
                return True
            # an initial of the study's names right before it ("J. Brown" for Joy Brown)
            if len(previous) == 1 and previous in self._first_letters and text[previous_start].isupper() and gap in (". ", " ", "."):
                return True
        word = text[start:end]
        initial_after = re.match(r",?\s*([A-Z])\.", text[end : end + 5])
        if initial_after and initial_after.group(1).lower() in self._first_letters and word[:1].isupper():
            return True  # "Stone, F."
        if index > 0 and tokens[index - 1][2] in _NAME_LEADS and word[:1].isupper() and not word.isupper():
            return True
        if word[:1].isupper() and not word.isupper() and folded not in NEVER_NAMES and not _mostly_upper(text):
            eponym = _EPONYM_AFTER.match(text[end : end + 40]) or text[end : end + 2] in ("'s", "’s")
            starts = bool(_SENTENCE_START.search(text[max(0, start - 3) : start])) or start == 0
            if not eponym and not starts:
                return True  # capitalised inside a sentence: "the right hand of Page", "History from May:"
            if not eponym and starts and re.match(r"\s*(?:[.;:,)]|$)", text[end:]):
                return True  # a sentence of its own: "... unchanged. Brown."
        if index > 0 and tokens[index - 1][2] in ("pt", "patient") and word.isupper():
            return True  # "PT BAKER REPORTS PAIN"
        # written in capitals inside text that is not itself in capitals ("MASS was admitted"), unless it is
        # a side, a body part or a finding ("Burn to the L HAND" for a patient called Hand)
        return len(word) >= 3 and word.isupper() and not _mostly_upper(text) and folded not in SIDES_AND_BODY

    def _pattern_spans(self, text: str) -> Iterator[_Span]:
        for category, pattern in _PATTERNS:
            for match in pattern.finditer(text):
                if match.lastindex:  # patterns with a group redact only the group (keep the keyword)
                    start, end = match.span(1)
                    if category == AGE and not (90 <= int(match.group(1)) <= 149):
                        continue
                else:
                    start, end = match.span()
                if category == ID and not any(ch.isdigit() for ch in text[start:end]):
                    continue
                yield _Span(start, end, category)
        yield from self._phone_spans(text)
        yield from self._place_spans(text)
        yield from self._free_name_spans(text)
        for pattern in (_TITLED_NAME, _ROLE_NAME):
            for match in pattern.finditer(text):
                start, end = match.span(1)
                words = [w for w in _CAPITAL_WORD.finditer(text, start, end)]
                kept = [
                    w for number, w in enumerate(words)
                    if (fold(w.group().rstrip("'’-")) not in (NOT_NAMES if number else COMMON_WORDS) or (pattern is _TITLED_NAME and number == 0))
                    and not (number and _EPONYM_AFTER.match(text[w.end() : w.end() + 40]))
                ]
                for word in kept:
                    yield _Span(word.start(), word.end(), NAME)

    def _phone_spans(self, text: str) -> Iterator[_Span]:
        """Phone numbers of any country (7 to 15 digits in groups, + or 00 prefix, extension)."""
        for match in _PHONE_SHAPE.finditer(text):
            value = match.group().rstrip(" .-/(")
            number = _PHONE_EXTENSION.sub("", value)
            digits = sum(ch.isdigit() for ch in number)
            grouped = bool(re.search(r"\d[\s().\-/]+\d", number))
            if not 7 <= digits <= 15 or not (grouped or value.startswith(("+", "00")) or value != number):
                continue
            if "/" in number and (re.search(r"\s/|/\s", number) or not value.startswith(("+", "00", "(")) and digits < 9 and value == number):
                continue  # 120/80, 2/3, dates: slashes are rarely inside phone numbers
            if _SSN_SHAPE.fullmatch(value) or any(p.fullmatch(value) for c, p in _PATTERNS if c == DATE):
                continue  # an SSN or a date, found as such by its own pattern
            yield _Span(match.start(), match.start() + len(value), PHONE)

    def _place_spans(self, text: str) -> Iterator[_Span]:
        """Street addresses (any suffix, several languages) and hospital or clinic names."""
        for pattern in _ADDRESS_PATTERNS:
            for match in pattern.finditer(text):
                start, end = match.span(1) if match.lastindex else match.span()
                value = text[start:end].rstrip(" ,.")
                lead = re.match(r"[^\W\d_]+\s+", value)
                while lead and fold(lead.group().strip()) in NOT_NAMES and not match.lastindex and not _STREET_WORD.fullmatch(lead.group().strip()):
                    start, value = start + lead.end(), value[lead.end() :]  # "from", "outside": not the address
                    lead = re.match(r"[^\W\d_]+\s+", value)
                if value and (any(ch.isdigit() for ch in value) or match.lastindex):
                    yield _Span(start, start + len(value), ADDRESS)
        for pattern in _INSTITUTION_PATTERNS:
            for match in pattern.finditer(text):
                start, end = match.span()
                words = [w for w in _CAPITAL_WORD.finditer(text, start, end)]
                # leading words that are ordinary words ("Transferred", "Outside") are not part of the name
                while words and fold(words[0].group().rstrip(".")) in _NOT_PLACE_NAMES and not re.match(_INSTITUTION_KIND, words[0].group()):
                    words.pop(0)
                if words:  # at least the kind is capitalised ("the hospital" is a word)
                    yield _Span(words[0].start(), end, INSTITUTION)

    def _free_name_spans(self, text: str) -> Iterator[_Span]:
        """Names no header lists, from the shape of the text and the name lists (`operators.phi.phi_names`).

        In mixed-case text: a capitalised given name or surname of the lists (a surname only where it
        does not start a sentence or stands next to another name word), two capitalised words in a
        row that are not ordinary or clinical words ("Refik Zorlu"), capitalised words after a
        relationship or role word ("Mother Kessandra Ulbright") or before one in brackets ("Ana
        Lima (daughter)"), and, two of them or a listed name, after "by", "with", "to". In lower
        case: a listed given name and the word after it, and two words after a relationship word.
        In capitals: listed given names and the word next to them. Around a name found so, a
        neighbouring capitalised listed name that is also a word joins it ("Rita Hall").
        `NOT_NAMES` (function words, clinical vocabulary, laterality) and eponyms ("Bell's palsy",
        "Graves disease") are never taken alone.
        """
        tokens = list(_NAME_TOKEN.finditer(text))
        if not tokens:
            return
        given, family = given_names(), surnames()
        upper_text = _mostly_upper(text)
        words = [_Word.of(text, token, index, upper_text, given, family) for index, token in enumerate(tokens)]

        def adjacent(left: int, right: int) -> bool:
            if not (0 <= left < right < len(tokens)):
                return False
            gap = text[tokens[left].end() : tokens[right].start()]
            return len(gap) <= 4 and re.fullmatch(r"[ \t,^-]*|[ \t]*[A-Z]\.[ \t]*", gap) is not None

        marked: set[int] = set()
        for w in words:
            i = w.index
            if w.stop:
                continue
            if upper_text:
                if w.given:
                    marked.add(i)
                continue
            if w.capital:
                if w.given or (w.family and not w.starts):
                    marked.add(i)
                elif w.family and any(adjacent(*pair) and words[n].capital and not words[n].stop for n, pair in ((i - 1, (i - 1, i)), (i + 1, (i, i + 1))) if 0 <= n < len(words)):
                    marked.add(i)
                elif (
                    adjacent(i, i + 1) and words[i + 1].capital and not words[i + 1].stop and not words[i + 1].starts
                    and not w.dicom and not words[i + 1].dicom
                ):
                    marked.update((i, i + 1))  # two capitalised words that are neither ordinary nor DICOM words
            elif w.given and adjacent(i, i + 1) and not words[i + 1].capital and words[i + 1].family:
                marked.update((i, i + 1))  # "maria garcia"
        # relationship and role words before a name, and after it in brackets ("Ana Lima (daughter)")
        for w in words:
            strong = w.folded in STRONG_CUES
            if not strong and w.folded not in WEAK_CUES:
                continue
            run: list[int] = []
            position = w.index + 1
            while position < len(words) and len(run) < 3:
                gap = text[tokens[position - 1].end() : tokens[position].start()]
                if not (adjacent(position - 1, position) or (not run and re.fullmatch(r"[ \t]*[:,]?[ \t]*", gap))):
                    break
                candidate = words[position]
                if candidate.stop and candidate.folded not in PARTICLES or candidate.dicom and not (candidate.given or candidate.family):
                    break
                if (upper_text or not candidate.capital) and not (strong or candidate.given or candidate.family):
                    break
                run.append(position)
                position += 1
            while run and words[run[-1]].folded in PARTICLES:
                run.pop()
            if strong and w.index >= 1:
                before = text[: tokens[w.index].start()]
                if re.search(r"[(,][ \t]*(?:the[ \t]+|her[ \t]+|his[ \t]+)?$", before):
                    back = w.index - 1
                    while back >= 0 and words[back].capital and not words[back].stop and back >= w.index - 3:
                        marked.add(back)
                        back -= 1
            if not run:
                continue
            listed = any(words[r].given or words[r].family for r in run)
            capitalised = any(words[r].capital for r in run) and not upper_text
            if strong and (capitalised or listed or len(run) >= 2):
                marked.update(run)
            elif not strong and (capitalised and (listed or len(run) >= 2) or not capitalised and len(run) >= 2 and listed):
                marked.update(run)  # after "by", "with", "to": "Ana Lima", "Dr-less Okafor", "maria garcia"
        # a listed name that is also a word joins a name found next to it ("Rita Hall", "WILLIAM SMITH")
        grown = True
        while grown:
            grown = False
            for i in sorted(marked):
                for n in (i - 1, i + 1):
                    if 0 <= n < len(words) and n not in marked and adjacent(min(i, n), max(i, n)):
                        neighbour = words[n]
                        plain = neighbour.capital and not neighbour.stop and not upper_text  # "Rita Persson"
                        if (plain or neighbour.listed_word and (neighbour.capital or not words[i].capital)) and neighbour.folded not in NEVER_NAMES:
                            marked.add(n)
                            grown = True
        for index in sorted(marked):
            yield _Span(tokens[index].start(), tokens[index].end(), NAME)

    def _literal_spans(self, text: str) -> Iterator[_Span]:
        for category, pattern in self._literals:
            for match in pattern.finditer(text):
                if match.end() > match.start():
                    yield _Span(match.start(), match.end(), category)
        if self.identifiers.dates:
            known = self.identifiers.dates
            for pattern in _DATE_CANDIDATES:
                for match in pattern.finditer(text):
                    if dates_in(match.group()) & known:
                        yield _Span(match.start(), match.end(), DATE)

    # ------------------------------------------------------------------ merging

    def _merge(self, text: str, spans: list[_Span]) -> list[_Span]:
        """Overlapping spans become one; name spans separated only by name glue or initials become one."""
        if not spans:
            return []
        spans.sort(key=lambda s: (s.start, -s.end))
        merged: list[_Span] = [spans[0]]
        for span in spans[1:]:
            last = merged[-1]
            gap = text[last.end : span.start] if span.start > last.end else ""
            joinable_names = (
                last.category == NAME and span.category == NAME and span.start >= last.end and _is_name_gap(gap)
            )
            if span.start < last.end or joinable_names:
                category = min((last.category, span.category), key=_PRIORITY.__getitem__)
                if joinable_names:
                    category = NAME
                merged[-1] = _Span(last.start, max(last.end, span.end), category)
            else:
                merged.append(span)
        return [self._absorb_initials(text, s) if s.category == NAME else s for s in merged]

    def _absorb_initials(self, text: str, span: _Span) -> _Span:
        """Extend a name span over initials written next to it ("J. Smith", "Smith, J.Q.").

        A letter without a full stop is taken only if it is an initial of the study's names and not
        L or R, which stand for a side ("STONE FAITH L HAND" keeps "L HAND").
        """
        start, end = span.start, span.end
        while True:
            before = re.search(r"(?:\b([A-Z])\.?[\s,]*|\b[A-Z]\.\s*)$", text[max(0, start - 4) : start])
            if not before or before.end() - before.start() == 0:
                break
            bare = before.group(1) and "." not in before.group()
            if bare and not self._bare_initial(before.group(1)):
                break
            start -= before.end() - before.start()
        after = re.match(r"(?:,?\s*[A-Z]\.(?:\s*[A-Z]\.)*|\s+([A-Z])(?![\w.]))", text[end : end + 12])
        if after and (after.group(1) is None or self._bare_initial(after.group(1))):
            end += after.end()
        return _Span(start, end, span.category)

    def _bare_initial(self, letter: str) -> bool:
        """Whether a letter written alone next to a name is one of its initials (never L or R: sides)."""
        return letter not in "LR" and letter.lower() in self._first_letters

    # ------------------------------------------------------------------ public

    def find(self, text: str) -> list[tuple[int, int, str]]:
        """The spans of `text` that `scrub` replaces: (start, end, category), in order, not overlapping."""
        if not isinstance(text, str):
            raise ScrubError(f"free text to scrub must be a string, not {type(text).__name__}")
        spans = list(self._literal_spans(text))
        spans.extend(self._name_spans(text))
        if self.patterns:
            spans.extend(self._pattern_spans(text))
        return [(s.start, s.end, s.category) for s in self._merge(text, spans)]

    def scrub(self, text: str) -> ScrubResult:
        """Return `text` with every identified span replaced by its `[CATEGORY]` tag, and the counts."""
        if not isinstance(text, str):
            raise ScrubError(f"free text to scrub must be a string, not {type(text).__name__}")
        if not text:
            return ScrubResult("", {})
        final = [_Span(*span) for span in self.find(text)]
        counts = Counter(span.category for span in final)
        pieces: list[str] = []
        position = 0
        for span in final:
            pieces.append(text[position : span.start])
            pieces.append(f"[{span.category}]")
            position = span.end
        pieces.append(text[position:])
        return ScrubResult("".join(pieces), {c: counts[c] for c in CATEGORIES if counts[c]})


def _is_name_gap(gap: str) -> bool:
    """Whether the text between two name spans is only what joins parts of a name."""
    if len(gap) > 8:
        return False
    return bool(re.fullmatch(r"(?:[\s,^'’.\-]|\b[A-Z]\b\.?)*", gap))


def _mostly_upper(text: str) -> bool:
    """Whether the text is written in capitals (as many DICOM descriptions are)."""
    letters = [ch for ch in text[:4000] if ch.isalpha()]
    return bool(letters) and sum(ch.isupper() for ch in letters) > 0.7 * len(letters)


def add_counts(total: dict[str, int], more: dict[str, int]) -> dict[str, int]:
    """`total` plus `more`, category by category, in CATEGORIES order (for per-study totals)."""
    summed = Counter(total)
    summed.update(more)
    return {c: summed[c] for c in CATEGORIES if summed[c]}
