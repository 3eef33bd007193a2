"""Which language a script is in, and which languages espeak-ng (the reference voice) speaks.

Detection is by writing system first (kana is Japanese, Hangul Korean, Cyrillic Russian...),
then, for Latin script, by the commonest short words of the languages most scripts use; an
undecided Latin script is English. A caller who knows the language says so (`--language`).
"""

from __future__ import annotations

import re
import unicodedata
from functools import cache
from pathlib import Path

NAMES = {
    "en": "English",
    "de": "German",
    "fr": "French",
    "es": "Spanish",
    "it": "Italian",
    "pt": "Portuguese",
    "nl": "Dutch",
    "ja": "Japanese",
    "ko": "Korean",
    "cmn": "Mandarin Chinese",
    "yue": "Cantonese",
    "ru": "Russian",
    "uk": "Ukrainian",
    "el": "Greek",
    "ar": "Arabic",
    "he": "Hebrew",
    "hi": "Hindi",
    "th": "Thai",
    "pl": "Polish",
    "sv": "Swedish",
    "tr": "Turkish",
    "tlh": "Klingon",
}
# Unicode character-name prefixes → the language written in that script.
_SCRIPTS = (
    ("HIRAGANA", "ja"),
    ("KATAKANA", "ja"),
    ("HANGUL", "ko"),
    ("CJK", "cmn"),
    ("CYRILLIC", "ru"),
    ("GREEK", "el"),
    ("ARABIC", "ar"),
    ("HEBREW", "he"),
    ("DEVANAGARI", "hi"),
    ("THAI", "th"),
)
_COMMON_WORDS = {
    "en": "the and is are to of you we this that with for it in on be will have your our",
    "de": "der die das und ist nicht ich wir sie mit den dem zu ein eine für auf sind heute "
    "es wie du dir mir auch guten danke bitte",
    "fr": "le la les et est une des vous nous pour dans que qui pas sur avec ce sont",
    "es": "el la los las y es una que de en por para con no se del al su son",
    "it": "il lo la gli le e è una che di per con non sono del della questo",
    "pt": "o a os as e é um uma que de em para com não do da são você",
    "nl": "de het een en is niet ik wij we zijn met voor van dat op te",
}


def name(code: str) -> str:
    return NAMES.get(code, code)


def detect_language(text: str) -> str:
    """The script's language code (ISO 639-1, or espeak-ng's code where it has none)."""
    counts: dict[str, int] = {}
    letters = 0
    for ch in text:
        if not ch.isalpha():
            continue
        letters += 1
        label = unicodedata.name(ch, "")
        for prefix, code in _SCRIPTS:
            if label.startswith(prefix):
                counts[code] = counts.get(code, 0) + 1
                break
    if counts:
        # Japanese mixes kanji (CJK) with kana: any kana makes CJK text Japanese.
        if counts.get("ja") and counts.get("cmn"):
            counts["ja"] += counts.pop("cmn")
        code, n = max(counts.items(), key=lambda kv: kv[1])
        if n >= letters / 2:
            return code
    words = re.findall(r"[^\W\d_]+", text.lower())
    scores = {
        code: sum(w in common.split() for w in words) for code, common in _COMMON_WORDS.items()
    }
    best = max(scores, key=lambda c: scores[c])
    return best if scores[best] > scores["en"] else "en"


@cache
def espeak_languages() -> tuple[str, ...]:
    """The languages the installed espeak-ng data has a dictionary for."""
    import espeakng_loader

    data = Path(espeakng_loader.get_data_path())
    return tuple(sorted(p.name[: -len("_dict")] for p in data.glob("*_dict")))


def espeak_voice(code: str) -> str:
    """espeak-ng's voice name for a language code."""
    return {"en": "en-us"}.get(code, code)
