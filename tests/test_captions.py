"""Captions from word timings: cues, the script's own spelling, WebVTT and SRT."""

from __future__ import annotations

import itertools

from cameofarm.models.data import WordTiming
from cameofarm.pipelines.captions import captions_for, display_words, make_cues


def _words(*spans):
    return [WordTiming(text, start, end) for text, start, end in spans]


def test_cues_end_at_sentences_and_carry_the_scripts_punctuation():
    script = "Welcome to the team, Ada! Bend your knees."
    words = _words(
        ("Welcome", 0.0, 0.5),
        ("to", 0.45, 0.6),
        ("the", 0.6, 0.77),
        ("team", 0.71, 1.14),
        ("Ada", 1.3, 1.65),
        ("Bend", 2.0, 2.3),
        ("your", 2.3, 2.5),
        ("knees", 2.5, 2.9),
    )
    captions = captions_for(script, words, "en")
    assert captions.vtt == (
        "WEBVTT\n\n"
        "00:00:00.000 --> 00:00:01.650\nWelcome to the team, Ada!\n\n"
        "00:00:02.000 --> 00:00:02.900\nBend your knees.\n"
    )
    assert captions.srt == (
        "1\n00:00:00,000 --> 00:00:01,650\nWelcome to the team, Ada!\n\n"
        "2\n00:00:02,000 --> 00:00:02,900\nBend your knees.\n"
    )
    assert set(captions.digests()) == {"vtt_sha256", "srt_sha256"}


def test_a_long_sentence_is_cut_by_length_and_time_and_never_overlaps():
    words = [WordTiming(f"word{i}", i * 0.5, i * 0.5 + 0.6) for i in range(40)]
    cues = make_cues(words)
    assert len(cues) > 1
    assert all(len(c.text) <= 84 for c in cues)
    assert all(c.end - c.start <= 6.0 + 1e-9 for c in cues)
    assert all(a.end <= b.start for a, b in itertools.pairwise(cues))
    assert " ".join(c.text for c in cues) == " ".join(w.text for w in words)  # nothing lost
    vtt = captions_for(" ".join(w.text for w in words), words, "en").vtt
    assert all(len(line) <= 42 for line in vtt.splitlines() if line.startswith("word"))


def test_unspaced_scripts_join_without_spaces():
    script = "ようこそ、はなこさん。きょうは あんぜん けんしゅうです。"
    words = _words(
        ("ようこそ", 0.0, 0.6),
        ("はなこさん", 0.8, 1.5),
        ("きょうは", 1.9, 2.3),
        ("あんぜん", 2.3, 2.8),
        ("けんしゅうです", 2.8, 3.6),
    )
    cues = make_cues(display_words(script, words), "ja")
    assert [c.text for c in cues] == ["ようこそ、はなこさん。", "きょうはあんぜんけんしゅうです。"]


def test_a_word_spoken_differently_keeps_the_voices_text_and_markup_is_neutralised():
    script = "Lift 20 boxes <b>now</b> --> go"
    words = _words(("Lift", 0.0, 0.3), ("twenty", 0.3, 0.7), ("boxes", 0.7, 1.0))
    shown = display_words(script, words)
    assert [w.text for w in shown] == ["Lift", "", "20 boxes <b>now</b> --> go"]
    words = _words(("now", 0.0, 0.3), ("go", 0.4, 0.6))
    vtt = captions_for(script, words, "en").vtt
    assert "<" not in vtt.split("\n", 2)[2] and "-->" not in vtt.splitlines()[3]
