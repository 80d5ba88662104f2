"""Given names and surnames for finding people's names in free text that no header lists.

The lists are the person-name lists the Faker library ships for `LEXICON_LOCALES` (read once,
folded like the scrubber's words). They are used as evidence, never alone: a word of the lists is
a name where it is written as one (capitalised in mixed-case text, next to another part of a name,
after a relationship word or a title; see `operators.phi.phi_text`). `bench/phi.py` draws names from
locales outside this set as well, to show what the scrubber finds without the lists.
"""

from __future__ import annotations

import functools
import importlib
import re
import unicodedata

#: The Faker locales whose given names and surnames the scrubber knows.
LEXICON_LOCALES = ("en_US", "en_GB", "de_DE", "fr_FR", "es_ES", "it_IT", "nl_NL", "pl_PL", "pt_BR")


class NameListError(RuntimeError):
    """The name lists cannot be read (the Faker package is missing or changed); install requirements.txt."""


def _fold(word: str) -> str:
    decomposed = unicodedata.normalize("NFKD", word)
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch)).casefold()


def _provider(locale: str):
    try:
        return importlib.import_module(f"faker.providers.person.{locale}").Provider
    except ImportError as exc:
        raise NameListError(
            f"the person-name lists of Faker locale {locale} cannot be imported ({exc}); install the pinned "
            "Faker from requirements.txt"
        ) from exc


def _words(attributes: tuple[str, ...]) -> frozenset[str]:
    found: set[str] = set()
    for locale in LEXICON_LOCALES:
        provider = _provider(locale)
        for attribute in attributes:
            for name in getattr(provider, attribute, ()) or ():
                for word in re.findall(r"[^\W\d_]+", str(name)):
                    if len(word) >= 3:
                        found.add(_fold(word))
    return frozenset(found)


@functools.lru_cache(maxsize=1)
def given_names() -> frozenset[str]:
    """Folded given names of every lexicon locale (three letters or more)."""
    return _words(("first_names", "first_names_male", "first_names_female"))


@functools.lru_cache(maxsize=1)
def surnames() -> frozenset[str]:
    """Folded surnames of every lexicon locale (three letters or more)."""
    return _words(("last_names",))
