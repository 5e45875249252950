"""Real-time interaction: streaming video and audio in, the answer streaming out (paper section 5).

The paper's mode is half-duplex: while the user speaks, incoming video frames are encoded and prefilled
into the LLM's KV cache as they arrive; a speech start/end predictor (here :mod:`omni_core.speech_boundary`,
a small head trained on our data) decides when the utterance is over; only then are the audio features fed,
and the answer is generated token by token. So at the end of speech only the audio (and a few template
tokens) is left to prefill, whatever the length of the video or of the conversation before it.

:class:`OmniSession` holds one conversation:

- low level, for notebooks and tests: ``add_frame`` / ``add_text`` / ``end_turn(audio=...)`` /
  ``answer()``; every call prefills only the tokens that are new (``incremental=True``), or, for the
  baseline, nothing until ``end_turn`` re-encodes the whole conversation (``incremental=False``);
- real time: ``push_video_frame`` / ``push_audio`` run the speech detector on each chunk, open a turn
  at speech start, encode frames at ``video_fps`` while the user speaks, end the turn at speech end and
  (with ``auto_answer``) stream the answer from a background thread. New speech during an answer stops
  it (barge-in, beyond the paper) and opens the next turn; every turn reuses the same cache.

The token layout of a turn is the chat template's, so a streamed conversation is the same sequence the
model was trained on: ``<|im_start|>user\\n<|video_start|> frames... <|video_end|><|audio_start|> ...
<|audio_end|><|im_end|>\\n<|im_start|>assistant\\n`` answer ``<|im_end|>\\n``.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torchaudio
from transformers import DynamicCache, StoppingCriteria, StoppingCriteriaList, TextStreamer

from omni_core.config import Config, StreamConfig
from omni_core.eval.runner import load_checkpoint, suppressed_token_ids
from omni_core.model.audio import audio_to_features, feature_extractor
from omni_core.model.token_counts import FRAME_SAMPLES, SAMPLING_RATE, audio_num_tokens, tokens_per_tile
from omni_core.model.vision import frame_tiles, to_pixel_values
from omni_core.speech_boundary import SpeechBoundaryDetector, SpeechBoundaryHead

EventKind = Literal["speech_start", "speech_end", "barge_in", "answer_start", "answer_end"]


class ContextFullError(RuntimeError):
    """The conversation no longer fits the LLM's positions."""


@dataclass
class StreamEvent:
    kind: EventKind
    time: float                     # stream clock: seconds of audio pushed so far
    text: str = ""


@dataclass
class TurnStats:
    """What one turn cost; times are ``time.perf_counter()`` values."""
    frames: int = 0
    audio_seconds: float = 0.0
    end_of_speech: float | None = None     # when the session knew the user had finished
    first_token: float | None = None
    done: float | None = None
    tokens_prefilled_after_speech: int = 0
    answer: str = ""
    interrupted: bool = False

    @property
    def latency(self) -> float:
        """Seconds from the end of speech to the first answer token."""
        if self.end_of_speech is None or self.first_token is None:
            return float("nan")
        return self.first_token - self.end_of_speech


class _CallbackStreamer(TextStreamer):
    """TextStreamer that hands finished words to a callback and stamps the first generated token."""

    def __init__(self, tokenizer, on_text: Callable[[str], None] | None, stats: TurnStats):
        super().__init__(tokenizer, skip_prompt=True, skip_special_tokens=True)
        self.on_text, self.stats = on_text, stats

    def put(self, value: torch.Tensor) -> None:
        if not self.next_tokens_are_prompt and self.stats.first_token is None:
            self.stats.first_token = time.perf_counter()
        super().put(value)

    def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
        if text and self.on_text is not None:
            self.on_text(text)


class _StopOnEvent(StoppingCriteria):
    def __init__(self, event: threading.Event):
        self.event = event

    def __call__(self, input_ids: torch.LongTensor, scores, **kwargs) -> torch.BoolTensor:
        return torch.full((input_ids.shape[0],), self.event.is_set(), dtype=torch.bool, device=input_ids.device)


@dataclass
class _Media:
    kind: Literal["video", "audio"]
    tensors: dict[str, torch.Tensor] = field(default_factory=dict)


class OmniSession:
    """One streamed conversation with an omni model (see the module docstring).

    Args:
        model: an ``OmniForConditionalGeneration`` (``build_model`` or ``from_pretrained``).
        processor: an ``OmniProcessor`` (or a tokenizer prepared with ``prepare_tokenizer``).
        speech_boundary: the speech start/end head; needed by ``push_audio`` only.
        cfg: ``cfg.stream`` (thresholds, hangover, chunking, answer length).
        incremental: False = the baseline that re-encodes the whole conversation at each end of turn.
        auto_answer: ``push_audio`` starts the answer in a background thread at the end of speech.
        on_text: called with each finished piece of answer text as it streams.
        on_event: called with every :class:`StreamEvent`.
        record_logits: keep the prefill logits (tests compare them with a one-shot prefill).
    """

    def __init__(self, model, processor, speech_boundary: SpeechBoundaryHead | None = None,
                 cfg: StreamConfig | None = None, *, incremental: bool = True, auto_answer: bool = True,
                 on_text: Callable[[str], None] | None = None,
                 on_event: Callable[[StreamEvent], None] | None = None, record_logits: bool = False):
        self.model = model.eval()
        self.device = next(model.parameters()).device
        self.tokenizer = getattr(processor, "tokenizer", processor)
        self.cfg = cfg or StreamConfig()
        self.incremental, self.auto_answer, self.record_logits = incremental, auto_answer, record_logits
        self.on_text, self.on_event = on_text, on_event
        mc = model.config
        vc, ac = mc.vision_config, mc.audio_config
        self.image_size, self.video_max_tiles = vc.image_size, mc.video_max_tiles
        self.tile_tokens = tokens_per_tile(vc.image_size, vc.patch_size, mc.video_pool, mc.vision_pool_type)
        self.window_seconds = ac.max_source_positions * FRAME_SAMPLES / SAMPLING_RATE
        self.downsample = mc.audio_downsample
        self.extractor = getattr(processor, "feature_extractor", None) or feature_extractor(ac.num_mel_bins)
        self.max_positions = mc.text_config.max_position_embeddings
        self.tok = {(m, k): mc.media_token_id(m, k) for m in ("video", "audio") for k in ("start", "pad", "end")}
        self.eos_id = self.tokenizer.convert_tokens_to_ids(self.tokenizer.eos_token)
        self.suppress = suppressed_token_ids(self.tokenizer)   # media placeholders have no features to emit
        self._template_pieces()
        self.detector = (SpeechBoundaryDetector(speech_boundary, self.cfg.end_threshold, self.cfg.min_speech_seconds,
                                                self.cfg.min_silence_seconds)
                         if speech_boundary is not None else None)
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.reset()

    # ----------------------------------------------------------------------------------------- setup
    def _template_pieces(self) -> None:
        """Token pieces of a turn, cut out of the chat template itself (never hand-written separators)."""
        mark = "\u2063SPLIT\u2063"
        render = lambda msgs, gen: self.tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=gen)
        user = render([{"role": "user", "content": mark}], True)
        pair = render([{"role": "user", "content": "x"}, {"role": "assistant", "content": mark}], False)
        encode = lambda s: self.tokenizer(s, add_special_tokens=False)["input_ids"]
        user_open, user_close = user.split(mark)
        self.user_open, self.user_close = encode(user_open), encode(user_close)
        self.assistant_close = encode(pair.split(mark)[1])

    def reset(self) -> None:
        """Forget the conversation: empty cache, no turn open, detector state cleared."""
        self.interrupt()
        self.cache = DynamicCache()
        self.ids: list[int] = []                 # every token of the conversation so far
        self.media: list[_Media] = []            # media items in order of their pad tokens
        self.n_cached, self.n_cached_media = 0, 0
        self.logits: list[tuple[int, torch.Tensor]] = []   # (first position, prefill logits) with record_logits
        self.state: Literal["idle", "listening", "ready", "answering"] = "idle"
        self.turns: list[TurnStats] = []
        self.events: list[StreamEvent] = []
        self._video_open = False
        self._last_frame_time = -float("inf")
        self._latest_frame: np.ndarray | None = None
        self._audio = np.zeros(0, np.float32)    # recent audio; sample 0 is at _audio_t0 on the stream clock
        self._audio_t0 = 0.0
        self._speech_start: float | None = None
        if self.detector is not None:
            self.detector.reset()

    # -------------------------------------------------------------------------------------- prefill
    def _media_kwargs(self, items: list[_Media]) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        dtype = next(self.model.parameters()).dtype
        for key in {k for it in items for k in it.tensors}:
            t = torch.cat([it.tensors[key] for it in items if key in it.tensors]).to(self.device)
            out[key] = t.to(dtype) if t.is_floating_point() else t
        return out

    @torch.no_grad()
    def _forward(self, ids: list[int], items: list[_Media]) -> None:
        out = self.model(input_ids=torch.tensor([ids], device=self.device), past_key_values=self.cache, use_cache=True,
                         logits_to_keep=0 if self.record_logits else 1, **self._media_kwargs(items))
        if self.record_logits:
            self.logits.append((self.cache.get_seq_length() - len(ids), out.logits[0].float()))

    def conversation_inputs(self) -> dict[str, torch.Tensor]:
        """The whole conversation as one batch-of-one model input (what a non-streaming call would see)."""
        return {"input_ids": torch.tensor([self.ids], device=self.device), **self._media_kwargs(self.media)}

    def _flush(self, keep_last: bool = False) -> int:
        """Prefill every token not yet in the cache (all but the last with ``keep_last``, which
        ``generate`` needs as its input). Returns the number of tokens prefilled."""
        end = len(self.ids) - int(keep_last)
        if end <= self.n_cached:
            return 0
        with self._lock:
            if not self.incremental:          # baseline: forget the cache, re-encode everything
                self.cache, self.n_cached, self.n_cached_media, self.logits = DynamicCache(), 0, 0, []
            n = end - self.n_cached
            self._forward(self.ids[self.n_cached:end], self.media[self.n_cached_media:])
            self.n_cached, self.n_cached_media = end, len(self.media)
            if self.cache.get_seq_length() != self.n_cached:
                raise RuntimeError(f"KV cache holds {self.cache.get_seq_length()} positions but {self.n_cached} "
                                   "tokens were prefilled")
        return n

    def _append(self, ids: list[int], media: _Media | None = None) -> None:
        if len(self.ids) + len(ids) + self.cfg.max_new_tokens + len(self.assistant_close) > self.max_positions:
            raise ContextFullError(f"the conversation would exceed the LLM's {self.max_positions} positions; "
                                   "call session.reset(), or lower stream.video_fps / the frames per turn")
        self.ids.extend(ids)
        if media is not None:
            self.media.append(media)

    def _emit(self, kind: EventKind, text: str = "") -> StreamEvent:
        ev = StreamEvent(kind, self.clock, text)
        self.events.append(ev)
        if self.on_event is not None:
            self.on_event(ev)
        return ev

    @property
    def clock(self) -> float:
        return self.detector.time if self.detector is not None else self._audio_t0 + len(self._audio) / SAMPLING_RATE

    # ----------------------------------------------------------------------------------- turn building
    def open_turn(self) -> None:
        """Start a user turn (stopping an answer in progress first)."""
        if self.state == "answering":
            self.interrupt()
        if self.state == "ready":
            raise RuntimeError("the last user turn is closed but not answered: call answer() (or answer_async())")
        if self.state == "listening":
            return
        self._append(self.user_open)
        self.turns.append(TurnStats())
        self.state = "listening"

    def _close_video(self) -> None:
        if self._video_open:
            self._append([self.tok["video", "end"]])
            self._video_open = False

    def add_frame(self, frame: np.ndarray) -> None:
        """Encode one video frame (HxWx3 uint8) into the open turn and prefill it now."""
        self.open_turn()
        if self.state != "listening":
            raise RuntimeError("add_frame after end_turn: answer() first, the next frame opens the next turn")
        start = [] if self._video_open else [self.tok["video", "start"]]
        pixels = to_pixel_values(frame_tiles(frame, self.image_size, self.video_max_tiles))   # as the processor does
        self._append(start + [self.tok["video", "pad"]] * (len(pixels) * self.tile_tokens),
                     _Media("video", {"video_values": pixels}))
        self._video_open = True
        self.turns[-1].frames += 1
        if self.incremental:
            self._flush()

    def add_text(self, text: str) -> None:
        """Typed text inside the open user turn (queued; prefilled with the next frame or the end of turn)."""
        self.open_turn()
        self._close_video()
        self._append(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def end_turn(self, audio: np.ndarray | None = None, text: str | None = None) -> int:
        """Close the user turn: feed the utterance's audio features (16 kHz mono) and optional text, then
        the assistant header. Returns the number of tokens prefilled now (the end-of-speech work)."""
        self.open_turn()
        stats = self.turns[-1]
        if stats.end_of_speech is None:
            stats.end_of_speech = time.perf_counter()
        self._close_video()
        if audio is not None and len(audio):
            wav = np.asarray(audio, dtype=np.float32)
            feats = audio_to_features(wav, self.extractor, self.window_seconds)
            n_tok = audio_num_tokens(len(wav), self.downsample)
            item = _Media("audio", {"audio_features": feats, "audio_window_counts": torch.tensor([feats.shape[0]]),
                                    "audio_token_counts": torch.tensor([n_tok])})
            self._append([self.tok["audio", "start"]] + [self.tok["audio", "pad"]] * n_tok + [self.tok["audio", "end"]],
                         item)
            stats.audio_seconds = len(wav) / SAMPLING_RATE
        if text:
            self._append(self.tokenizer(text, add_special_tokens=False)["input_ids"])
        self._append(self.user_close)
        stats.tokens_prefilled_after_speech = self._flush(keep_last=True)
        self.state = "ready"
        return stats.tokens_prefilled_after_speech

    # -------------------------------------------------------------------------------------- answering
    def answer(self, max_new_tokens: int | None = None, **generate_kwargs) -> str:
        """Generate the answer to the closed turn token by token (``on_text`` sees it stream); stops early
        on :meth:`interrupt`. The answer's tokens stay in the cache for the next turn."""
        if self.state != "ready":
            raise RuntimeError(f"answer() needs a closed user turn (end_turn), the session is {self.state!r}")
        self.state = "answering"
        return self._answer(max_new_tokens, **generate_kwargs)

    def _answer(self, max_new_tokens: int | None, **generate_kwargs) -> str:
        try:
            return self._generate(max_new_tokens, **generate_kwargs)
        except BaseException:
            self.state = "idle"           # never leave the session stuck in "answering"
            raise

    @torch.no_grad()
    def _generate(self, max_new_tokens: int | None, **generate_kwargs) -> str:
        stats = self.turns[-1]
        self._emit("answer_start")
        with self._lock:
            self._flush(keep_last=True)
            n_prompt = len(self.ids)
            kwargs = {"max_new_tokens": max_new_tokens or self.cfg.max_new_tokens, "do_sample": False,
                      "suppress_tokens": self.suppress, **generate_kwargs}
            out = self.model.generate(input_ids=torch.tensor([self.ids], device=self.device),
                                      attention_mask=torch.ones(1, n_prompt, dtype=torch.long, device=self.device),
                                      past_key_values=self.cache,
                                      streamer=_CallbackStreamer(self.tokenizer, self.on_text, stats),
                                      stopping_criteria=StoppingCriteriaList([_StopOnEvent(self._stop)]), **kwargs)
            new = out[0, n_prompt:].tolist()
            stats.interrupted = self._stop.is_set()
            answer_ids = new[:-1] if new and new[-1] == self.eos_id else new
            self.ids.extend(answer_ids)
            self.n_cached = self.cache.get_seq_length()       # the last generated token is not in the cache
            self._append(self.assistant_close)
        stats.answer = self.tokenizer.decode(answer_ids, skip_special_tokens=True)
        stats.done = time.perf_counter()
        self.state = "idle"
        self._emit("answer_end", stats.answer)
        return stats.answer

    def answer_async(self, max_new_tokens: int | None = None, **generate_kwargs) -> threading.Thread:
        """:meth:`answer` in a background thread, so audio keeps flowing (and can barge in)."""
        if self.state != "ready":
            raise RuntimeError(f"answer_async() needs a closed user turn (end_turn), the session is {self.state!r}")
        self._stop.clear()
        self.state = "answering"
        self._thread = threading.Thread(target=self._answer, args=(max_new_tokens,), kwargs=generate_kwargs,
                                        daemon=True)
        self._thread.start()
        return self._thread

    def interrupt(self) -> None:
        """Stop an answer in progress (it is kept, truncated, in the conversation) and wait for it."""
        thread = self._thread
        if thread is not None and thread.is_alive():
            self._stop.set()
            thread.join()
        self._thread = None
        self._stop.clear()

    def wait(self, timeout: float | None = None) -> None:
        """Block until a background answer is finished."""
        if self._thread is not None:
            self._thread.join(timeout)

    def ask(self, text: str | None = None, audio: np.ndarray | None = None,
            frames: tuple[np.ndarray, ...] | list[np.ndarray] = ()) -> str:
        """One whole turn at once: frames, then audio and text, then the answer."""
        for f in frames:
            self.add_frame(f)
        self.end_turn(audio=audio, text=text)
        return self.answer()

    # -------------------------------------------------------------------------------------- real time
    def push_video_frame(self, frame: np.ndarray) -> bool:
        """A camera frame at the current stream time. While the user speaks, frames are encoded at
        ``video_fps`` (the turn's frame budget permitting); otherwise only the latest is kept, to open
        the next turn with. Returns whether the frame was encoded."""
        now = self.clock
        if (self.state != "listening" or now - self._last_frame_time < 1.0 / self.cfg.video_fps - 1e-6
                or (self.turns and self.turns[-1].frames >= self.cfg.max_frames)):
            self._latest_frame = frame
            return False
        self.add_frame(frame)
        self._last_frame_time, self._latest_frame = now, None
        return True

    def push_audio(self, chunk: np.ndarray, sampling_rate: int = SAMPLING_RATE) -> list[StreamEvent]:
        """A microphone chunk (mono float). Runs the speech detector; at speech start opens a turn (barge-in
        if an answer is streaming), at speech end closes it with the utterance's audio and answers."""
        if self.detector is None:
            raise RuntimeError("push_audio needs a speech boundary head: OmniSession(..., speech_boundary="
                               "load_or_train_speech_boundary(checkpoint / SPEECH_BOUNDARY_SUBDIR))")
        wav = np.asarray(chunk, dtype=np.float32).reshape(-1)
        if sampling_rate != SAMPLING_RATE:
            wav = torchaudio.functional.resample(torch.from_numpy(wav), sampling_rate, SAMPLING_RATE).numpy()
        self._audio = np.concatenate([self._audio, wav])
        out = []
        for ev in self.detector.push(wav):
            if ev.kind == "speech_start":
                if self.state == "answering":
                    self.interrupt()
                    out.append(self._emit("barge_in"))
                self._speech_start = ev.time
                self.open_turn()
                if self._latest_frame is not None:
                    self.push_video_frame(self._latest_frame)
                out.append(self._emit("speech_start"))
            elif ev.kind == "speech_end" and self._speech_start is not None:
                a = max(0, int((self._speech_start - self.cfg.preroll_seconds - self._audio_t0) * SAMPLING_RATE))
                b = int((ev.time + self.cfg.preroll_seconds - self._audio_t0) * SAMPLING_RATE)
                self._speech_start = None
                out.append(self._emit("speech_end"))
                self.end_turn(audio=self._audio[a:b])
                if self.auto_answer:
                    self.answer_async()
        if self._speech_start is None:                    # keep only a pre-roll of audio between utterances
            keep = int(self.cfg.preroll_seconds * SAMPLING_RATE) + len(wav)
            drop = max(0, len(self._audio) - keep)
            self._audio, self._audio_t0 = self._audio[drop:], self._audio_t0 + drop / SAMPLING_RATE
        return out


def warm_up(model, processor, cfg: StreamConfig | None = None) -> None:
    """One throwaway turn (a blank frame, half a second of silence, one answer token). The first forward
    passes pay one-off costs (kernel selection, allocations) that would otherwise land on the first answer."""
    size = model.config.vision_config.image_size
    OmniSession(model, processor, cfg=cfg).ask(audio=np.zeros(SAMPLING_RATE // 2, np.float32),
                                                frames=[np.zeros((size, size, 3), np.uint8)])


# ------------------------------------------------------------------------------------------- loading
def load_model(cfg: Config, checkpoint: str | Path | None = None, seed: int = 0):
    """(model, processor) for a session: a trained checkpoint when ``checkpoint`` holds one, else the
    config's model (pretrained parts from their paths, the rest random-init, so demos and notebooks run
    before any training). The tokenizer is the configured one, the data pipeline's, or one trained here."""
    from omni_core.data.sources.text import short_sentences
    from omni_core.model import build_model, load_tokenizer, train_tokenizer
    from omni_core.processing import OmniProcessor

    if checkpoint is not None and (Path(checkpoint) / "config.json").exists():
        return load_checkpoint(cfg, checkpoint)
    tok_dir = cfg.model.tokenizer.path or str(Path(cfg.data.root) / "tokenizer")
    if Path(tok_dir).is_dir():
        tokenizer = load_tokenizer(tok_dir, cfg.model.trust_remote_code)
    else:
        tokenizer = train_tokenizer(short_sentences(max_words=12), cfg.model.tokenizer.vocab_size)
    processor = OmniProcessor(tokenizer, cfg.model)
    torch.manual_seed(seed)
    return build_model(cfg, processor.tokenizer).eval(), processor
