"""The content policy: which scripts the farm refuses, and which an owner refuses for a cameo.

Text is normalised before matching (invisible characters and combining marks removed,
look-alike letters of other scripts folded to the Latin letter they imitate using Unicode's
confusables table — a Cyrillic `і` in "presіdent" is an `i` —, Unicode NFKC, case folded,
punctuation to spaces, and a second pass with common digit-for-letter swaps such as `n00d3`),
then each rule's phrases are
matched as whole words and its patterns as regular expressions. Word lists cannot understand
intent: they are a first filter whose reason is always shown, and the lists live in config so
an operator tunes them for their audience.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from functools import lru_cache

from cameofarm.configs import ContentConfig, ContentRule

_LEET = str.maketrans(
    {"0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "7": "t", "@": "a", "$": "s"}
)


class ContentError(ValueError):
    """A script breaks the content policy or an owner's restriction; the message says which."""


@dataclass(frozen=True)
class Violation:
    rule: str
    description: str
    matched: str


# Removed outright: format characters (zero-width space and joiners, bidi controls, soft
# hyphen), combining marks (so accents and stacked marks hide nothing) and the fillers that
# render as nothing although Unicode files them as letters.
_INVISIBLE_CATEGORIES = frozenset({"Cf", "Mn", "Me"})
_FILLERS = frozenset("\u115f\u1160\u3164\uffa0\u2800")


@lru_cache(maxsize=1)
def _confusable_letters() -> dict[int, str]:
    """Every non-ASCII character that Unicode lists as confusable with one ASCII letter or
    digit, mapped to it (Cyrillic а, Greek ο, mathematical 𝐬 ...)."""
    from confusable_homoglyphs.confusables import confusables_data

    table = {}
    for char, homoglyphs in confusables_data.items():
        if len(char) != 1 or char.isascii():
            continue
        ascii_like = [g["c"] for g in homoglyphs if len(g["c"]) == 1 and g["c"].isascii()]
        # Letters before digits (an `о` is an o, not a 0); the text is case folded first.
        for target in sorted((c for c in ascii_like if c.isalnum()), key=str.isdigit):
            table[ord(char)] = target.lower()
            break
    return table


def fold_lookalikes(text: str) -> str:
    """Strip invisible characters and marks, case fold, and fold look-alike letters to ASCII
    (upper case is folded first: a Greek capital iota is an i, not an l)."""
    decomposed = unicodedata.normalize("NFKD", text).casefold()
    visible = "".join(
        " " if unicodedata.category(ch) == "Cc" else ch
        for ch in decomposed
        if unicodedata.category(ch) not in _INVISIBLE_CATEGORIES and ch not in _FILLERS
    )
    return visible.translate(_confusable_letters())


def normalise(text: str) -> list[str]:
    """Return the forms of `text` that rules are matched against."""
    folded = unicodedata.normalize("NFKC", fold_lookalikes(text)).casefold()
    forms = []
    for form in (folded, folded.translate(_LEET)):
        cleaned = " ".join(re.sub(r"[^\w']+", " ", form).split())
        if cleaned not in forms:
            forms.append(cleaned)
    return forms


def _compiled(rule: ContentRule) -> re.Pattern[str]:
    return _compile(tuple(rule.phrases), tuple(rule.patterns))


@lru_cache(maxsize=256)
def _compile(phrases: tuple[str, ...], patterns: tuple[str, ...]) -> re.Pattern[str]:
    # Phrases get the same folding as the text, so a rule written with accents still matches.
    words = [normalise(p)[0] for p in phrases]
    parts = [r"(?<!\w)" + re.escape(w) + r"(?!\w)" for w in words if w]
    parts += [f"(?:{p})" for p in patterns]
    return re.compile("|".join(parts) if parts else r"(?!x)x", re.IGNORECASE)


def violations(text: str, policy: ContentConfig, rule_names: list[str]) -> list[Violation]:
    """Return each of the named rules the text breaks (with the words that matched)."""
    found = []
    forms = normalise(text)
    for name in rule_names:
        rule = policy.rules[name]
        for form in forms:
            match = _compiled(rule).search(form)
            if match:
                found.append(Violation(name, rule.description, match.group(0)))
                break
    return found


def check_script(text: str, policy: ContentConfig, what: str = "script") -> None:
    """Raise ContentError if the text (the script, or `what` else) breaks a rule the farm
    refuses for everyone."""
    for v in violations(text, policy, policy.blocked):
        raise ContentError(
            f"the {what} was refused by the content policy: {v.description} "
            f"(rule {v.rule!r}, matched {v.matched!r})"
        )


def check_restrictions(
    text: str, policy: ContentConfig, cameo_id: str, restrictions: list[str]
) -> None:
    """Raise ContentError if the text breaks a restriction the cameo's owner set."""
    known = [r for r in restrictions if r in policy.rules]
    for v in violations(text, policy, known):
        raise ContentError(
            f"the owner of cameo {cameo_id} does not allow {v.description} "
            f"(restriction {v.rule!r}, matched {v.matched!r})"
        )


def check_restriction_names(names: list[str], policy: ContentConfig) -> list[str]:
    """Return the names if an owner may set them; raise ContentError listing what is allowed."""
    unknown = sorted(set(names) - set(policy.restrictable))
    if unknown:
        raise ContentError(
            f"unknown restriction(s) {[u[:40] for u in unknown]}; owners may restrict: "
            f"{policy.restrictable}"
        )
    return sorted(set(names))


# Names and labels people see: any text with something visible in it, but no control
# characters, line or paragraph separators, or bidirectional overrides (which make a name
# display as another). Emoji sequences with joiners pass. The HTTP API's schema uses the same
# pattern, so a name it accepts is one the farm stores.
_HIDDEN = "\\x00-\\x1f\\x7f-\\x9f\\u2028\\u2029\\u202a-\\u202e\\u2066-\\u2069"
DISPLAY_TEXT_PATTERN = f"^[^{_HIDDEN}]*[^{_HIDDEN}\\s][^{_HIDDEN}]*$"
_DISPLAY_TEXT = re.compile(DISPLAY_TEXT_PATTERN)
DISPLAY_TEXT_RULE = "without control characters, line breaks or direction overrides"


def is_display_text(value: object, limit: int = 200) -> bool:
    """True for a non-blank name or label of at most `limit` characters that displays as
    what it says."""
    return isinstance(value, str) and len(value) <= limit and bool(_DISPLAY_TEXT.fullmatch(value))
