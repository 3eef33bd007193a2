"""The content policy: which scripts the farm refuses, and which an owner refuses for a cameo.

Text is normalised before matching (Unicode NFKC, case folded, punctuation to spaces, and a
second pass with common digit-for-letter swaps such as `n00d3`), then each rule's phrases are
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


def normalise(text: str) -> list[str]:
    """Return the forms of `text` that rules are matched against."""
    folded = unicodedata.normalize("NFKC", text).casefold()
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
    parts = [r"(?<!\w)" + re.escape(" ".join(p.casefold().split())) + r"(?!\w)" for p in phrases]
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


def check_script(text: str, policy: ContentConfig) -> None:
    """Raise ContentError if the text breaks a rule the farm refuses for everyone."""
    for v in violations(text, policy, policy.blocked):
        raise ContentError(
            f"the script was refused by the content policy: {v.description} "
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
