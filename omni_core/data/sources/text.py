"""Text sources: the Python stdlib's help topics (pydoc_data) and Debian fortunes."""
from __future__ import annotations

import functools
import re
from pathlib import Path

PYDOC_LICENSE = "PSF-2.0"
FORTUNES_LICENSE = "Public-Domain (Debian fortunes-min, see /usr/share/doc/fortunes-min/copyright)"
FORTUNE_DIR = Path("/usr/share/games/fortunes")
# Files of the fortunes packages with plain, general prose (the topical files are left out).
FORTUNE_FILES = ("fortunes", "wisdom", "literature", "science", "platitudes", "computers", "education",
                 "work", "pets", "food", "people", "riddles")


@functools.lru_cache(maxsize=1)
def pydoc_topics() -> dict[str, str]:
    """Help topic name -> text, from the stdlib's ``pydoc_data.topics`` (no install needed)."""
    from pydoc_data.topics import topics
    return {k: topics[k] for k in sorted(topics)}


@functools.lru_cache(maxsize=1)
def fortunes() -> tuple[str, ...]:
    """Every fortune of the chosen files, whitespace-normalised, in file order."""
    out = []
    found = False
    for name in FORTUNE_FILES:
        p = FORTUNE_DIR / name
        if not p.exists():
            continue
        found = True
        for block in p.read_text(encoding="utf-8", errors="replace").split("\n%\n"):
            t = " ".join(block.replace("%", " ").split())
            if t and t.isascii():
                out.append(t)
    if not found:
        raise FileNotFoundError(f"no fortune files under {FORTUNE_DIR}; run `apt-get install fortunes-min`")
    return tuple(out)


def prose_chunks(text: str, max_words: int) -> list[str]:
    """Split prose on paragraph breaks, then cut paragraphs to at most ``max_words`` words."""
    out = []
    for para in re.split(r"\n\s*\n", text):
        words = para.split()
        for i in range(0, len(words), max_words):
            chunk = " ".join(words[i:i + max_words])
            if len(chunk.split()) >= 8:
                out.append(chunk)
    return out


def _plain_sentences(fortune: str, max_words: int, min_words: int) -> list[str]:
    """The sentences of one fortune that are plain words, lower-cased without punctuation."""
    out = []
    for s in re.split(r"(?<=[.!?])\s+", fortune):
        words = re.sub(r"[^a-z' ]", " ", s.lower()).split()
        if min_words <= len(words) <= max_words and all(w.isalpha() for w in words):
            out.append(" ".join(words))
    return out


@functools.lru_cache(maxsize=8)
def fortune_sentences(max_words: int, min_words: int = 3) -> tuple[tuple[int, str], ...]:
    """(fortune index, sentence) for every plain sentence of :func:`fortunes`, each sentence once: read speech in
    an open vocabulary. The index is the fortune's, so a split can follow the fortune (as text_lm's prose does)."""
    seen, out = set(), []
    for i, f in enumerate(fortunes()):
        for t in _plain_sentences(f, max_words, min_words):
            if t not in seen:
                seen.add(t)
                out.append((i, t))
    return tuple(out)


@functools.lru_cache(maxsize=8)
def short_sentences(max_words: int, min_words: int = 3) -> tuple[str, ...]:
    """Short, plain fortune sentences, lower-cased without punctuation: open-vocabulary speech for the
    speech-boundary head and the streaming benchmark."""
    return tuple(t for _, t in fortune_sentences(max_words, min_words))
