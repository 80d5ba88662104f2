"""The burn specialist's clinical flags, each with the inputs it used, in words.

- Needs surgical assessment: P(deep partial-thickness) + P(full-thickness) at or above a
  configured threshold.
- Special area: the imaged region is the face, a hand, a foot, the genitalia/perineum or a major
  joint (from the region table of the burn configuration); unknown when the header names no
  region or a region that may or may not include one.
- Burn centre referral (American Burn Association referral criteria), decided only on what a
  photograph can show: a full-thickness burn (its probability at least the configured depth
  probability); partial-thickness burns (summed probability at least that) over the configured
  %TBSA; a burn of a special area. YES when one of these is met; NO when all three are decided and none
  is met; UNKNOWN otherwise. The criteria a photograph cannot show (electrical, chemical or
  inhalation injury, burns elsewhere on the body, comorbidities, concomitant trauma, children in
  hospitals without qualified personnel, social or rehabilitative needs) are never assessed, and
  every referral flag says so.
- Requires clinician review: always.
"""

from __future__ import annotations

import numpy as np

from operators.sr import coding
from operators.specialists.burn.config import DepthSettings, FlagSettings
from operators.specialists.burn.findings import BurnFlag, FlagValue, ImagedRegion, TbsaEstimate

NOT_ASSESSED = (
    "not assessed (a photograph cannot show them): electrical, chemical or inhalation injury, burns elsewhere "
    "on the body, comorbidities, concomitant trauma, children, social or rehabilitative needs"
)


def _pct(value: float) -> str:
    return f"{100.0 * value:.1f} %"


def surgical_assessment(probabilities: np.ndarray, depth: DepthSettings, flags: FlagSettings) -> BurnFlag:
    """YES when the summed probability of the surgical depth classes reaches the threshold."""
    parts = [(depth.classes[depth.index(k)].name, float(probabilities[depth.index(k)])) for k in depth.surgical_classes]
    total = sum(p for _, p in parts)
    threshold = flags.surgical_assessment_threshold
    raised = total >= threshold
    terms = " + ".join(f"P({name}) {_pct(p)}" for name, p in parts)
    return BurnFlag(
        coding.FLAG_SURGICAL,
        FlagValue.YES if raised else FlagValue.NO,
        f"{terms} = {_pct(total)}, {'at or above' if raised else 'below'} the threshold {_pct(threshold)}",
    )


def _region_words(region: ImagedRegion) -> str:
    side = {"L": "left ", "R": "right "}.get(region.laterality, "")
    return f"{side}{region.name} (from {region.source})"


def special_area(region: ImagedRegion | None) -> BurnFlag:
    """Whether the imaged region is a special area (face, hands, feet, genitalia/perineum, major joints)."""
    if region is None:
        return BurnFlag(
            coding.FLAG_SPECIAL_AREA,
            FlagValue.UNKNOWN,
            "no body region in the header (BodyPartExamined, AnatomicRegionSequence)",
        )
    if region.special is FlagValue.YES:
        words = f"region {_region_words(region)}: special area ({region.special_reason})"
    elif region.special is FlagValue.NO:
        words = f"region {_region_words(region)}: not a special area"
    else:
        words = f"region {_region_words(region)}: {region.special_reason or 'cannot be decided'}"
    return BurnFlag(coding.FLAG_SPECIAL_AREA, region.special, words)


def burn_centre_referral(
    probabilities: np.ndarray,
    depth: DepthSettings,
    flags: FlagSettings,
    special: BurnFlag,
    tbsa: TbsaEstimate,
) -> BurnFlag:
    """The ABA referral criteria a photograph can decide (see the module docstring)."""
    seen = flags.referral_depth_probability
    limit = flags.referral_partial_thickness_tbsa_percent
    met: list[str] = []
    not_met: list[str] = []
    undecided: list[str] = []

    p_full = float(probabilities[depth.index(depth.full_thickness_class)])
    full = f"full-thickness burn (P(full-thickness) {_pct(p_full)}, counted from {_pct(seen)})"
    (met if p_full >= seen else not_met).append(full)

    p_partial = sum(float(probabilities[depth.index(k)]) for k in depth.partial_thickness_classes)
    partial = f"partial-thickness burn over {limit:g} % TBSA"
    if p_partial < seen:
        not_met.append(f"{partial} (P(partial-thickness) {_pct(p_partial)}, below {_pct(seen)})")
    elif tbsa.percent is None:
        undecided.append(f"{partial} (%TBSA {tbsa.method})")
    elif tbsa.percent > limit:
        met.append(f"{partial} (estimated {tbsa.percent:.2f} % TBSA)")
    else:
        not_met.append(f"{partial} (estimated {tbsa.percent:.2f} % TBSA)")

    area = "burn of a special area"
    {FlagValue.YES: met, FlagValue.NO: not_met, FlagValue.UNKNOWN: undecided}[special.value].append(
        f"{area} ({special.inputs})"
    )

    if met:
        value = FlagValue.YES
    elif undecided:
        value = FlagValue.UNKNOWN
    else:
        value = FlagValue.NO
    words = []
    if met:
        words.append("met: " + "; ".join(met))
    if not_met:
        words.append("not met: " + "; ".join(not_met))
    if undecided:
        words.append("not decidable: " + "; ".join(undecided))
    words.append(NOT_ASSESSED)
    return BurnFlag(coding.FLAG_REFERRAL, value, ". ".join(words))


def clinician_review() -> BurnFlag:
    """Always raised: every finding of this product is AI-generated."""
    return BurnFlag(coding.FLAG_REVIEW, FlagValue.YES, "always: the findings are AI-generated and unverified")


def burn_flags(
    probabilities: np.ndarray,
    depth: DepthSettings,
    flags: FlagSettings,
    region: ImagedRegion | None,
    tbsa: TbsaEstimate,
) -> tuple[BurnFlag, ...]:
    """Every flag of one photograph, in report order."""
    special = special_area(region)
    return (
        surgical_assessment(probabilities, depth, flags),
        special,
        burn_centre_referral(probabilities, depth, flags, special, tbsa),
        clinician_review(),
    )
