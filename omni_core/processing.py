"""`OmniProcessor`: one conversation (chat messages with typed content parts) -> model inputs + labels.

Media are decoded here (PIL for images, PyAV for video, soundfile / PyAV for audio), turned into tensors
(AnyRes tiles of images and of sampled video frames, Whisper log-mel windows), and each media part becomes
``<|x_start|>`` + N ``<|x_pad|>`` + ``<|x_end|>`` with N from the same counting functions the model uses.
A video part with ``"audio": true`` also feeds its own sound track to the audio branch, as an audio span
right after the frames (both cover the same clip).
Labels come from the chat template's ``{% generation %}`` marks (assistant turns only).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import av
import numpy as np
import soundfile as sf
import torch
import torchaudio
from av.video.reformatter import VideoReformatter
from PIL import Image, ImageOps, UnidentifiedImageError
from transformers import AutoTokenizer

from omni_core.config import ModelConfig, _build, params_dict
from omni_core.model.audio import audio_to_features, feature_extractor
from omni_core.model.configuration import MEDIA, SPECIAL_TOKENS
from omni_core.model.labels import IGNORE_INDEX
from omni_core.model.token_counts import SAMPLING_RATE, audio_num_tokens, tokens_per_tile
from omni_core.model.tokenizer import prepare_tokenizer
from omni_core.model.vision import anyres_tiles, frame_tiles, to_pixel_values

ROLES = ("system", "user", "assistant")
PROCESSOR_FILE = "omni_processor.json"


class MediaError(ValueError):
    """A media file (or in-memory media) is missing, unreadable or empty; the message names it and the fix."""


# ------------------------------------------------------------------------------------------ media I/O
def _media_path(part: dict, base_dir: Path) -> Path:
    if "path" not in part:
        raise MediaError(f"{part.get('type')} part {part!r} has neither 'path' nor in-memory media")
    base = base_dir.resolve()
    path = (base / part["path"]).resolve()
    if not path.is_relative_to(base):
        raise MediaError(f"{part['path']}: media paths must stay inside {base}; move the file there")
    if not path.is_file():
        raise MediaError(f"{path}: no such media file; fix the path (relative to {base}) or regenerate the data")
    return path


def load_image(part: dict, base_dir: Path, max_side: int) -> Image.Image:
    """RGB PIL image; transparency goes onto white, 16-bit / float greyscale is rescaled to 8 bit."""
    source = part.get("image")
    name = "in-memory image"
    try:
        if source is None:
            path = _media_path(part, base_dir)
            name = str(path)
            image = Image.open(path)
            image.draft("RGB", (max_side, max_side))            # JPEG: decode huge files at reduced size
            image.load()
            image = ImageOps.exif_transpose(image)
        elif isinstance(source, Image.Image):
            image = source
        else:
            arr = np.asarray(source)
            if arr.dtype != np.uint8 or arr.ndim not in (2, 3):
                raise MediaError(f"{name}: expected an HxWx3 (or HxW) uint8 array, got {arr.dtype} {arr.shape}")
            image = Image.fromarray(arr)
    except Image.DecompressionBombError as err:
        raise MediaError(f"{name}: {err}; downscale the image (or raise PIL.Image.MAX_IMAGE_PIXELS)") from err
    except (UnidentifiedImageError, OSError, SyntaxError) as err:
        raise MediaError(f"{name}: cannot read the image ({err}); re-save it as PNG or JPEG") from err
    if image.width == 0 or image.height == 0:
        raise MediaError(f"{name}: image has zero size")
    if image.mode in ("I", "I;16", "I;16B", "F"):
        arr = np.asarray(image, dtype=np.float32)
        span = float(arr.max() - arr.min()) or 1.0
        image = Image.fromarray(((arr - arr.min()) / span * 255).astype(np.uint8))
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(canvas, rgba)
    return image.convert("RGB")


def load_video_frames(part: dict, base_dir: Path, fps: float, max_frames: int) -> list[Image.Image | np.ndarray]:
    """Frames sampled at ``fps`` (first frame at t=0), thinned uniformly to ``max_frames``.

    In-memory ``frames`` are taken as already sampled. The sound track is read by :func:`load_audio`.
    """
    if "frames" in part:
        frames, name = list(part["frames"]), "in-memory video"
        for i, frame in enumerate(frames):
            shape = getattr(frame, "shape", None)
            if not isinstance(frame, Image.Image) and (shape is None or len(shape) != 3 or shape[2] != 3
                                                       or np.asarray(frame).dtype != np.uint8):
                raise MediaError(f"{name}: frames[{i}] must be an HxWx3 uint8 array or a PIL image, got "
                                 f"{type(frame).__name__} {shape}")
    else:
        path = _media_path(part, base_dir)
        name, frames = str(path), []
        try:
            with av.open(str(path)) as container:
                if not container.streams.video:
                    raise MediaError(f"{path}: the file has no video stream")
                stream = container.streams.video[0]
                stream.thread_type = "AUTO"                      # multi-threaded decoding
                rate = float(stream.average_rate or stream.guessed_rate or 25)
                to_rgb = VideoReformatter()     # one scaler per video: frame.to_image() builds one per frame
                next_t = 0.0
                for i, frame in enumerate(container.decode(stream)):
                    t = float(frame.time) if frame.time is not None else i / rate
                    if t + 0.5 / rate >= next_t:
                        frames.append(to_rgb.reformat(frame, format="rgb24").to_image())
                        next_t += 1.0 / fps
        except (av.FFmpegError, OSError) as err:
            raise MediaError(f"{path}: cannot decode the video ({err}); re-encode it (e.g. H.264 mp4)") from err
    if not frames:
        raise MediaError(f"{name}: the video has zero frames; drop the sample or fix the file")
    if len(frames) > max_frames:
        keep = np.linspace(0, len(frames) - 1, max_frames).round().astype(int)
        frames = [frames[i] for i in keep]
    return frames


def _decode_audio_pyav(path: Path) -> np.ndarray:
    """Audio track of any container PyAV reads (mp4/AAC, mp3, ...), as 16 kHz mono float32."""
    with av.open(str(path)) as container:
        if not container.streams.audio:
            raise MediaError(f"{path}: the file has no audio stream")
        resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLING_RATE)
        chunks = [r.to_ndarray().reshape(-1) for frame in container.decode(container.streams.audio[0])
                  for r in resampler.resample(frame)]
        chunks += [r.to_ndarray().reshape(-1) for r in resampler.resample(None)]
    return np.concatenate(chunks) if chunks else np.zeros(0, np.float32)


def load_audio(part: dict, base_dir: Path) -> np.ndarray:
    """16 kHz mono float32 waveform; empty or non-finite audio is an error, silence is fine.

    A video part's sound track (``{"type": "video", "audio": true}``) is decoded with PyAV."""
    if part.get("type") == "video":
        if "path" not in part:
            raise MediaError('in-memory video frames carry no sound track: drop "audio": true, or pass the sound '
                             'as an audio part with "array" and "sampling_rate"')
        path = _media_path(part, base_dir)
        try:
            wav, sr, name = _decode_audio_pyav(path), SAMPLING_RATE, str(path)
        except MediaError as err:
            raise MediaError(f'{err}: the video has no sound track; drop "audio": true or re-encode the video '
                             "with its sound") from err
        except (av.FFmpegError, OSError) as err:
            raise MediaError(f"{path}: cannot decode the video's sound track ({err}); re-encode it (e.g. H.264 + "
                             "AAC mp4)") from err
    elif "array" in part:
        name = "in-memory audio"
        if "sampling_rate" not in part:
            raise MediaError(f"{name}: an audio part with 'array' needs 'sampling_rate'")
        wav, sr = np.asarray(part["array"], dtype=np.float32), int(part["sampling_rate"])
        wav = wav.mean(axis=-1) if wav.ndim == 2 else wav
    else:
        path = _media_path(part, base_dir)
        name = str(path)
        try:
            data, sr = sf.read(str(path), dtype="float32", always_2d=True)
            wav = data.mean(axis=1)
        except (sf.LibsndfileError, RuntimeError):
            try:
                wav, sr = _decode_audio_pyav(path), SAMPLING_RATE
            except (av.FFmpegError, OSError) as err:
                raise MediaError(f"{path}: cannot read the audio ({err}); convert it to 16 kHz mono WAV") from err
    if wav.size == 0:
        raise MediaError(f"{name}: the audio is empty (0 samples); drop the sample or fix the file")
    if not np.isfinite(wav).all():
        raise MediaError(f"{name}: the audio holds NaN/inf samples; fix the file")
    if sr != SAMPLING_RATE:
        wav = torchaudio.functional.resample(torch.from_numpy(np.ascontiguousarray(wav)), sr, SAMPLING_RATE).numpy()
    return wav


# ------------------------------------------------------------------------------------------ processor
class OmniProcessor:
    """Tokenizer + chat template + image / video / audio preprocessing for `OmniForConditionalGeneration`."""

    def __init__(self, tokenizer, model_cfg: ModelConfig, images_as_video: bool = False):
        self.tokenizer = prepare_tokenizer(tokenizer)
        self.model_cfg = model_cfg
        # stage 1d's first step: every image goes through the video path as a one-frame video
        self.images_as_video = images_as_video
        v, a = model_cfg.vision, model_cfg.audio
        self.feature_extractor = feature_extractor(a.num_mel_bins)
        self.image_tokens_per_tile = tokens_per_tile(v.image_size, v.patch_size, v.pool, v.pool_type)
        self.video_tokens_per_tile = tokens_per_tile(v.image_size, v.patch_size, v.video_pool, v.pool_type)
        self.pad_ids = {m: self.tokenizer.convert_tokens_to_ids(SPECIAL_TOKENS[m]["pad"]) for m in MEDIA}

    # ------------------------------------------------------------------------------- save / load
    def save_pretrained(self, save_directory: str | Path) -> None:
        save_directory = Path(save_directory)
        save_directory.mkdir(parents=True, exist_ok=True)
        self.tokenizer.save_pretrained(save_directory)
        # a key added later (e.g. model.audio.crop_to_clip) stays out while at its default: the file, and the
        # checkpoint's hash, stay as they were for runs that do not use it
        (save_directory / PROCESSOR_FILE).write_text(json.dumps({"model": params_dict(self.model_cfg)}, indent=2))

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> OmniProcessor:
        directory = Path(directory)
        cfg_file = directory / PROCESSOR_FILE
        if not cfg_file.is_file():
            raise FileNotFoundError(f"{cfg_file} is missing: {directory} was not written by OmniProcessor.save_pretrained")
        model_cfg = _build(ModelConfig, json.loads(cfg_file.read_text())["model"], "model", str(cfg_file))
        return cls(AutoTokenizer.from_pretrained(directory), model_cfg)

    # ---------------------------------------------------------------------------------- media parts
    def _image(self, part: dict, base_dir: Path) -> tuple[torch.Tensor, int]:
        v = self.model_cfg.vision
        tiles = anyres_tiles(load_image(part, base_dir, v.image_size * v.max_tiles), v.image_size, v.max_tiles)
        return to_pixel_values(tiles), len(tiles) * self.image_tokens_per_tile

    def _video(self, part: dict, base_dir: Path) -> tuple[torch.Tensor, int]:
        """Each sampled frame through the image path: its AnyRes tiles (at most ``video_max_tiles`` + a global
        view), all frames' tiles in one tensor."""
        v = self.model_cfg.vision
        if part.get("type") == "image":            # images_as_video: an image is a one-frame video
            frames = [load_image(part, base_dir, v.image_size * v.video_max_tiles)]
        else:
            frames = load_video_frames(part, base_dir, v.video_fps, v.video_max_frames)
        tiles = [t for f in frames for t in frame_tiles(f, v.image_size, v.video_max_tiles)]
        return to_pixel_values(tiles), len(tiles) * self.video_tokens_per_tile

    def _audio(self, part: dict, base_dir: Path) -> tuple[torch.Tensor, int]:
        a = self.model_cfg.audio
        wav = load_audio(part, base_dir)
        return audio_to_features(wav, self.feature_extractor, a.window_seconds), audio_num_tokens(len(wav), a.downsample)

    # ------------------------------------------------------------------------------------------ call
    def __call__(self, messages: list[dict[str, Any]], base_dir: str | Path = ".",
                 add_generation_prompt: bool = False) -> dict[str, torch.Tensor]:
        """Tensors for ONE conversation: 1-D token keys + concatenated media keys (absent modality = no key)."""
        base_dir = Path(base_dir)
        media: dict[str, list[torch.Tensor]] = {m: [] for m in MEDIA}
        audio_tokens: list[int] = []
        expected = dict.fromkeys(MEDIA, 0)
        rendered = []
        for message in _check_messages(messages):
            content = message["content"]
            if isinstance(content, str):
                rendered.append(message)
                continue
            parts = []
            for part in content:
                kind = part["type"]
                if kind == "text":
                    parts.append(part)
                    continue
                as_video = kind == "image" and self.images_as_video
                tensor, n = (self._video if as_video else getattr(self, f"_{kind}"))(part, base_dir)
                kind = "video" if as_video else kind
                media[kind].append(tensor)
                expected[kind] += n
                parts.append({"type": kind, "num_tokens": n})
                if kind == "audio":
                    audio_tokens.append(n)
                if kind == "video" and part.get("audio") is True:      # the clip's own sound, right after its frames
                    tensor, n = self._audio(part, base_dir)
                    media["audio"].append(tensor)
                    expected["audio"] += n
                    audio_tokens.append(n)
                    parts.append({"type": "audio", "num_tokens": n})
            rendered.append({"role": message["role"], "content": parts})
        enc = self.tokenizer.apply_chat_template(rendered, tokenize=True, return_dict=True,
                                                 return_assistant_tokens_mask=True,
                                                 add_generation_prompt=add_generation_prompt)
        input_ids = torch.tensor(enc["input_ids"], dtype=torch.long)
        mask = torch.tensor(enc["assistant_masks"], dtype=torch.bool)
        for m in MEDIA:
            found = int((input_ids == self.pad_ids[m]).sum())
            if found != expected[m]:
                raise ValueError(f"the conversation's text holds literal {SPECIAL_TOKENS[m]['pad']} tokens ({found} "
                                 f"found, {expected[m]} expected from its {m} parts); remove special tokens from text")
        if not add_generation_prompt and not bool(mask.any()):
            raise ValueError("the conversation has no assistant tokens to supervise; add an assistant turn "
                             "(or call with add_generation_prompt=True for inference)")
        out = {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids),
               "labels": torch.where(mask, input_ids, torch.full_like(input_ids, IGNORE_INDEX))}
        if media["image"]:
            out["pixel_values"] = torch.cat(media["image"])
        if media["video"]:
            out["video_values"] = torch.cat(media["video"])
        if media["audio"]:
            out["audio_features"] = torch.cat(media["audio"])
            out["audio_window_counts"] = torch.tensor([f.shape[0] for f in media["audio"]], dtype=torch.long)
            out["audio_token_counts"] = torch.tensor(audio_tokens, dtype=torch.long)
        return out

    def decode(self, token_ids, skip_special_tokens: bool = True) -> str:
        return self.tokenizer.decode(token_ids, skip_special_tokens=skip_special_tokens)

    def batch_decode(self, sequences, skip_special_tokens: bool = True) -> list[str]:
        return self.tokenizer.batch_decode(sequences, skip_special_tokens=skip_special_tokens)


def _check_messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Structural checks with messages that name the offending message / part."""
    if not isinstance(messages, list) or not messages:
        raise ValueError(f"messages must be a non-empty list of {{'role', 'content'}} dicts, got {messages!r:.200}")
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in ROLES or "content" not in message:
            raise ValueError(f"messages[{i}] = {message!r:.200} must be a dict with role in {ROLES} and content")
        content = message["content"]
        if isinstance(content, str):
            continue
        if not isinstance(content, list):
            raise ValueError(f"messages[{i}].content must be a string or a list of parts, got {type(content).__name__}")
        for j, part in enumerate(content):
            kind = part.get("type") if isinstance(part, dict) else None
            if kind not in ("text", *MEDIA):
                raise ValueError(f"messages[{i}].content[{j}] = {part!r:.200}: type must be one of text, image, video, audio")
            if kind == "text" and not isinstance(part.get("text"), str):
                raise ValueError(f"messages[{i}].content[{j}]: a text part needs a string 'text'")
            if kind != "text" and message["role"] == "assistant":
                raise ValueError(f"messages[{i}].content[{j}]: the model outputs text only; move the {kind} to a user turn")
    return messages
