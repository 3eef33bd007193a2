"""Captions from word timings: cues, the script's own spelling, WebVTT and SRT."""

from __future__ import annotations

import itertools

import numpy as np
from cameofarm.models.data import Cue, VideoChunk, WordTiming
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


def test_burned_captions_draw_each_cue_in_its_frames_only_above_the_watermark():
    from cameofarm.models.reference.compositor import caption_bottom, finish_frames, watermark_mask
    from cameofarm.models.reference.subtitles import caption_patch, undrawable

    fps, grey = 25, 120
    frames = np.full((10, 720, 1280, 3), grey, np.uint8)
    words = _words(("Robert');", 0.0, 0.12), ("DROP", 0.12, 0.2), ("TABLE", 0.2, 0.28))
    cues = captions_for("Robert'); DROP TABLE", words, "en").cues
    assert cues == (Cue(0.0, 0.3, "Robert'); DROP TABLE"),)  # shown at least 0.3 s
    chunk = VideoChunk(index=1, start=2, frames=frames[:8])  # frames 2..9: 0.08 s to 0.36 s
    out = list(finish_frames(chunk, fps, cues))
    bottom = caption_bottom(1280, 720)
    patch, x, y = caption_patch(cues[0].text, 1280, 720, bottom)
    h, w = patch.shape[:2]
    _, (_, top, _, _) = watermark_mask(1280, 720)
    assert y + h <= top and x == (1280 - w) // 2  # centred, clear of the watermark
    shown = [i for i, f in enumerate(out) if not (f[y : y + h, x : x + w] == grey).all()]
    assert shown == [0, 1, 2, 3, 4, 5]  # frames 2-7 start before 0.3 s; 8 and 9 after
    box = out[0][y : y + h, x : x + w].astype(int)
    dark = (box < grey * 0.5).all(axis=2).mean()
    white = (box > 230).all(axis=2).mean()
    assert dark > 0.6 and 0.02 < white < 0.4  # white text on a darkened box
    outside = np.ones((720, 1280), bool)
    outside[y : y + h, x : x + w] = False
    outside[watermark_mask(1280, 720)[1][1] :, :] = False
    assert (out[0][outside] == grey).all()  # nothing else in the picture changed
    # A portrait frame gets a smaller font, never text past its edges.
    tall, tx, _ = caption_patch(
        "A caption line of about forty-two chars!\nand a second", 720, 1280, 1100
    )
    assert tx >= 0 and tall.shape[1] <= 720
    assert undrawable("Grüße, Ада, Ωμέγα") == []
    assert undrawable("日本語 テスト") == ["日", "本", "語", "テ", "ス", "ト"]
