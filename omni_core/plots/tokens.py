"""Where the tokens come from (notebook 00, README): token budgets per modality, which patches each
pooled token covers, the spliced sequence of real samples, AnyRes tiling."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib.collections
import matplotlib.lines
import matplotlib.patches
import matplotlib.pyplot as plt
import matplotlib.ticker
import numpy as np

from .style import _TABLE_COLORS, _draw_wave, _finish, _frames_strip, _show_in_notebook, save_figure


# ---------------------------------------------------------------------------------- token budget
def plot_token_budget(budget: Mapping[str, Mapping], out: str | Path) -> list[Path]:
    """Three panels from :func:`omni_core.eval.ablation.token_budget`: image tokens vs AnyRes tiles, video
    tokens vs seconds (1 fps, frame cap), audio tokens vs seconds for each Conv-GMLP rate."""
    from ..model.token_counts import audio_tokens_per_second

    fig, axes = plt.subplots(1, 3, figsize=(12, 3.6))
    img, vid, aud = budget["image"], budget["video"], budget["audio"]
    axes[0].bar([str(t) for t in img["tiles"]], img["tokens"], color=_TABLE_COLORS["image"])
    axes[0].set_xlabel("AnyRes grid tiles (+1 global view when > 1)")
    axes[0].set_title(f"image: {img['tokens_per_tile']} tokens per tile", fontsize=10)
    lo, hi = vid["tokens_per_frame"]
    axes[1].fill_between(vid["seconds"], vid["tokens_min"], vid["tokens"], color=_TABLE_COLORS["video"], alpha=0.25,
                         label=f"{lo}-{hi} tokens/frame (frame shape)")
    axes[1].plot(vid["seconds"], vid["tokens"], color=_TABLE_COLORS["video"], label="widest frame")
    axes[1].plot(vid["seconds"], vid["tokens_min"], color=_TABLE_COLORS["video"], ls="--", label="square frame")
    axes[1].set_xlabel("video seconds")
    axes[1].set_title(f"video: {lo}-{hi} tokens/frame, {vid['fps']:g} fps, max {vid['max_frames']} frames", fontsize=10)
    axes[1].legend(fontsize=8, frameon=False)
    for n, toks in aud["tokens"].items():
        axes[2].plot(aud["seconds"], toks, label=f"n={n} ({audio_tokens_per_second(int(n)):g} tok/s)")
    axes[2].set_xlabel("audio seconds")
    axes[2].set_title("audio: Conv-GMLP rate n", fontsize=10)
    axes[2].legend(fontsize=8, frameon=False)
    for ax in axes:
        ax.set_ylabel("LLM tokens")
        ax.grid(alpha=0.3)
    fig.suptitle(f"Token budget per modality ({budget.get('scale', 'full')} scale)", fontsize=11)
    fig.tight_layout()
    return save_figure(fig, out)


# ------------------------------------------------------------------------------------ token geometry
_TOKEN_PALETTE = np.array([[0.62, 0.79, 0.88], [0.99, 0.75, 0.52], [0.70, 0.87, 0.54], [0.85, 0.73, 0.87]])


def _draw_token_regions(ax, tokens: np.ndarray, image=None) -> None:
    """Colour each patch of ``tokens`` ((rows, cols) token index per patch) by its token and draw the borders
    between tokens; with ``image`` (one tile's pixels), the colours are laid over it, patch for patch."""
    tokens = np.asarray(tokens)
    # neighbouring tokens get different colours: two alternating colours along rows, two along columns
    row_of = np.cumsum(np.r_[0, np.any(np.diff(tokens, axis=0) != 0, axis=1)])[:, None]
    col_of = np.cumsum(np.r_[0, np.any(np.diff(tokens, axis=1) != 0, axis=0)])[None, :]
    colours = _TOKEN_PALETTE[(row_of % 2) * 2 + col_of % 2]
    if image is None:
        ax.imshow(colours, interpolation="nearest")
    else:
        extent = (-0.5, tokens.shape[1] - 0.5, tokens.shape[0] - 0.5, -0.5)
        ax.imshow(np.asarray(image), extent=extent, interpolation="nearest")
        ax.imshow(colours, extent=extent, interpolation="nearest", alpha=0.35)
        for k in range(1, max(tokens.shape)):       # faint patch borders: a token is several patches
            ax.axvline(k - 0.5, color="0.5", lw=0.2)
            ax.axhline(k - 0.5, color="0.5", lw=0.2)
    rows, cols = np.nonzero(np.diff(tokens, axis=0))                  # borders between vertical neighbours
    segments = [[(c - 0.5, r + 0.5), (c + 0.5, r + 0.5)] for r, c in zip(rows, cols)]
    rows, cols = np.nonzero(np.diff(tokens, axis=1))                  # ... and between horizontal ones
    segments += [[(c + 0.5, r - 0.5), (c + 0.5, r + 0.5)] for r, c in zip(rows, cols)]
    ax.add_collection(matplotlib.collections.LineCollection(segments, colors="k", linewidths=0.6))


def plot_pool_geometry(maps: Mapping[str, np.ndarray], out: str | Path | None = None,
                       tile_side: int | None = None) -> list[Path]:
    """One panel per patch grid: each patch coloured by the token it feeds, token borders drawn, so a token that
    mixed distant patches would show as a broken region. ``maps``: title -> (rows, cols) token index per patch
    (`omni_core.model.vision.patch_token_map`; tiles side by side for a frame of several tiles, their borders
    drawn in red every ``tile_side`` patches)."""
    fig, axes = plt.subplots(1, len(maps), figsize=(4.2 * len(maps), 4.2), squeeze=False)
    for ax, (title, tokens) in zip(axes[0], maps.items()):
        tokens = np.asarray(tokens)
        _draw_token_regions(ax, tokens)
        for x in range(tile_side or tokens.shape[1], tokens.shape[1], tile_side or tokens.shape[1]):
            ax.axvline(x - 0.5, color="red", lw=2.5)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel(f"{tokens.shape[1]} patch columns")
        ax.set_ylabel(f"{tokens.shape[0]} patch rows")
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle("Which patches feed which LLM token (one coloured region = one token)", fontsize=11)
    fig.tight_layout()
    if out is None:
        _show_in_notebook(fig)
        plt.close(fig)
        return []
    return save_figure(fig, out)


# ---------------------------------------------------------------------------- token layout (notebook 00)
TOKEN_COLORS = {"text": "#f7f7f7", "template": "#cccccc", "image": "#9ecae1", "video": "#a1d99b", "audio": "#fcae91"}


@dataclass(frozen=True)
class TokenRun:
    """A stretch of a token sequence drawn as one block. ``kind``: text, template (the chat template's own
    tokens) or the modality of a media token; ``count`` tokens; ``supervised`` when the loss covers them."""
    kind: str
    label: str
    count: int
    supervised: bool = False


def token_runs(input_ids, tokenizer, labels=None) -> list[TokenRun]:
    """The sequence as :class:`TokenRun` s: each media start/end token and chat-template token alone, each run of
    one modality's pad tokens as one block with its count (``<|image_pad|> ×80``), and the text between them
    decoded, split where supervision (``labels``) starts or stops."""
    from ..model.configuration import MEDIA, SPECIAL_TOKENS
    from ..model.labels import IGNORE_INDEX

    ids = [int(i) for i in np.asarray(input_ids).reshape(-1)]
    supervised = ([False] * len(ids) if labels is None
                  else [int(x) != IGNORE_INDEX for x in np.asarray(labels).reshape(-1)])
    media = {tokenizer.convert_tokens_to_ids(tok): (m, part) for m in MEDIA for part, tok in SPECIAL_TOKENS[m].items()}
    added = set(getattr(tokenizer, "added_tokens_decoder", {})) | set(media)
    runs, i = [], 0
    while i < len(ids):
        tid, j = ids[i], i + 1
        if tid in media and media[tid][1] == "pad":
            while j < len(ids) and ids[j] == tid:
                j += 1
            runs.append(TokenRun(media[tid][0], f"{tokenizer.convert_ids_to_tokens(tid)} ×{j - i}", j - i,
                                 any(supervised[i:j])))
        elif tid in added:
            runs.append(TokenRun(media[tid][0] if tid in media else "template", tokenizer.convert_ids_to_tokens(tid),
                                 1, supervised[i]))
        else:
            while j < len(ids) and ids[j] not in added and supervised[j] == supervised[i]:
                j += 1
            runs.append(TokenRun("text", tokenizer.decode(ids[i:j]), j - i, supervised[i]))
        i = j
    return runs


def format_runs(runs: Sequence[TokenRun]) -> str:
    """The sequence as text with every pad run collapsed to ``<|x_pad|> ×N``: what the LLM reads, in one screen."""
    return "".join(f"[{r.label}]" if r.label.endswith(f"×{r.count}") and r.kind != "text" else r.label for r in runs)


def _strip_label(run: TokenRun, max_chars: int = 34) -> str:
    text = run.label.replace("\n", "\\n")
    if run.kind == "text":
        text = f"“{text}”" if len(text) <= max_chars else f"“{text[:max_chars - 1]}…”"
    return text


def _layout_strip(runs: Sequence[TokenRun], width: float) -> list[tuple[TokenRun, str, float, int, float]]:
    """(run, label, x, line, block width) of each block, wrapped into lines of ``width`` character cells."""
    placed, x, line = [], 0.0, 0
    for run in runs:
        label = _strip_label(run)
        w = len(label) + 1.5
        if x > 0 and x + w > width:
            x, line = 0.0, line + 1
        placed.append((run, label, x, line, w))
        x += w
    return placed


def _draw_token_strip(ax, runs: Sequence[TokenRun], width: float) -> None:
    placed = _layout_strip(runs, width)
    for run, label, x, line, w in placed:
        ax.add_patch(matplotlib.patches.Rectangle((x, -line - 0.8), w - 0.3, 0.66, facecolor=TOKEN_COLORS[run.kind],
                                                  edgecolor="0.35", lw=0.5))
        bold = run.kind != "text" and run.count > 1          # the collapsed pad runs are what to look at
        ax.text(x + (w - 0.3) / 2, -line - 0.47, label, ha="center", va="center", fontsize=6.5, family="monospace",
                fontweight="bold" if bold else "normal")
        if run.supervised:
            ax.plot([x, x + w - 0.3], [-line - 0.9, -line - 0.9], color="k", lw=2)
    lines = placed[-1][3] + 1 if placed else 1
    ax.set_xlim(0, width)
    ax.set_ylim(-lines - 0.1, 0)
    ax.axis("off")


def token_layout_rows(samples: Sequence[Mapping], processor, root: str | Path) -> list[dict]:
    """For each manifest sample, what :func:`plot_token_layout` draws: the processor's sequence as runs, and the
    media as the model gets them (the image, the sampled video frames, the audio waveform)."""
    from ..data.manifest import media_parts
    from ..processing import load_audio, load_image, load_video_frames

    root, v = Path(root), processor.model_cfg.vision
    rows = []
    for s in samples:
        batch = processor(s["messages"], base_dir=root)
        runs = token_runs(batch["input_ids"], processor.tokenizer, batch["labels"])
        pads = [r for r in runs if r.label.endswith(f"×{r.count}") and r.kind != "text"]
        counts: dict[str, int] = {}
        for r in pads:
            counts[f"{r.kind} placeholders"] = counts.get(f"{r.kind} placeholders", 0) + r.count
        counts["media start/end"] = sum(r.count for r in runs if r.kind in ("image", "video", "audio")) \
            - sum(r.count for r in pads)
        counts |= {kind: sum(r.count for r in runs if r.kind == kind) for kind in ("text", "template")}
        row = {"title": f"{s['task']}: {len(batch['input_ids'])} tokens = "
                        + " + ".join(f"{n} {k}" for k, n in counts.items() if n), "runs": runs}
        for part in media_parts(s):
            if part["type"] == "image":
                row.setdefault("image", np.asarray(load_image(part, root, v.image_size * v.max_tiles)))
            elif part["type"] == "video":
                frames = load_video_frames(part, root, v.video_fps, v.video_max_frames)
                row.setdefault("frames", [np.asarray(f) for f in frames])
            if part["type"] == "audio" or (part["type"] == "video" and part.get("audio")):
                row.setdefault("audio", load_audio(part, root))
        rows.append(row)
    return rows


def plot_token_layout(rows: Sequence[Mapping], out: str | Path | None = None, width: float = 120):
    """One row per sample: its media (``image``, ``frames`` or ``audio``, as :func:`token_layout_rows` gives
    them) beside the spliced token sequence as a colour-coded strip (text, chat template, image, video, audio;
    each run of pad tokens one block with its count; the supervised answer underlined). Saved to ``out``
    (PNG + SVG, returns the paths) or returned as a figure."""
    heights = [max(_layout_strip(r["runs"], width)[-1][3] + 1, 2) for r in rows]
    fig = plt.figure(figsize=(13, 0.42 * sum(heights) + 0.6 * len(rows) + 0.8), layout="constrained")
    grid = fig.add_gridspec(len(rows), 2, width_ratios=[1, 5], height_ratios=heights)
    for i, row in enumerate(rows):
        media_ax, strip_ax = fig.add_subplot(grid[i, 0]), fig.add_subplot(grid[i, 1])
        if "image" in row:
            media_ax.imshow(np.asarray(row["image"]))
            media_ax.set_title(f"image {np.asarray(row['image']).shape[1]}x{np.asarray(row['image']).shape[0]} px",
                               fontsize=8)
            media_ax.axis("off")
        elif "frames" in row:
            media_ax.imshow(_frames_strip(row["frames"]))
            media_ax.set_title(f"{len(row['frames'])} frames as sampled", fontsize=8)
            media_ax.axis("off")
        elif "audio" in row:
            _draw_wave(media_ax, np.asarray(row["audio"]))
            media_ax.set_title(f"audio {len(row['audio']) / 16000:.1f} s", fontsize=8)
        else:
            media_ax.axis("off")
        _draw_token_strip(strip_ax, row["runs"], width)
        strip_ax.set_title(row["title"], fontsize=9, loc="left")
    handles = [matplotlib.patches.Patch(facecolor=c, edgecolor="0.35", label=k) for k, c in TOKEN_COLORS.items()]
    handles.append(matplotlib.lines.Line2D([], [], color="k", lw=2, label="supervised (the loss covers it)"))
    fig.legend(handles=handles, loc="outside lower center", ncol=len(handles), fontsize=8, frameon=False)
    fig.suptitle("What the LLM reads: text and media placeholders, spliced in one sequence", fontsize=11)
    return _finish(fig, out)


def plot_anyres_tiling(image, vision, out: str | Path | None = None):
    """AnyRes on one image under ``vision`` (`omni_core.config.VisionConfig`): the image, its global view and the
    grid tiles the encoder sees (`omni_core.model.vision.anyres_tiles`), each tile overlaid with the patches that
    pool into each LLM token (`patch_token_map`: one coloured region = one token). The title counts the tiles
    and tokens with the processor's own functions."""
    from PIL import Image

    from ..model.token_counts import image_tokens, tile_grid, tokens_per_tile
    from ..model.vision import anyres_tiles, patch_token_map

    v = vision
    image = image if isinstance(image, Image.Image) else Image.fromarray(np.asarray(image, dtype=np.uint8))
    tiles = anyres_tiles(image, v.image_size, v.max_tiles)
    rows, cols = tile_grid(image.width, image.height, v.image_size, v.max_tiles) if len(tiles) > 1 else (0, 0)
    side = v.image_size // v.patch_size
    tokens = patch_token_map(side, v.pool, v.pool_type)
    per_tile = tokens_per_tile(v.image_size, v.patch_size, v.pool, v.pool_type)
    total = image_tokens(image.width, image.height, v)
    if total != len(tiles) * per_tile:
        raise AssertionError(f"token_counts says {total} tokens, the tiles give {len(tiles)} x {per_tile}")
    fig = plt.figure(figsize=(2.4 * (2 + cols), 2.6 * max(rows, 1) + 0.8), layout="constrained")
    grid = fig.add_gridspec(max(rows, 1), 2 + cols)
    ax = fig.add_subplot(grid[:, 0])
    ax.imshow(np.asarray(image))
    if rows:      # where the tiles cut the image: the grid canvas holds it resized to fit, centred
        scale = min(cols * v.image_size / image.width, rows * v.image_size / image.height)
        dx, dy = (cols * v.image_size - image.width * scale) / 2, (rows * v.image_size - image.height * scale) / 2
        for c in range(1, cols):
            ax.axvline((c * v.image_size - dx) / scale - 0.5, color="red", lw=1.5)
        for r in range(1, rows):
            ax.axhline((r * v.image_size - dy) / scale - 0.5, color="red", lw=1.5)
    ax.set_title(f"image {image.width}x{image.height} px" + (" (red: tile borders)" if rows else ""), fontsize=9)
    ax.axis("off")
    pooled = f"{side}x{side} patches -> {per_tile} tokens"
    views = [("global view (the whole image, one tile)", tiles[0], grid[:, 1])]
    views += [(f"grid tile row {r + 1}, col {c + 1}", tiles[1 + r * cols + c], grid[r, 2 + c])
              for r in range(rows) for c in range(cols)]
    for title, tile, cell in views:
        ax = fig.add_subplot(cell)
        _draw_token_regions(ax, tokens, tile)
        ax.set_title(f"{title}\n{pooled}", fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    if rows:
        count = (f"{rows}x{cols} grid = {rows * cols} tiles + 1 global view = {len(tiles)} tiles x {per_tile} tokens "
                 f"= {total} image tokens")
    else:
        count = f"fits one tile: the global view alone, {total} image tokens"
    fig.suptitle(f"AnyRes + {v.pool}x{v.pool} pooling: {count}", fontsize=10)
    return _finish(fig, out)
