"""Real-time interaction: streaming video and audio in, the answer streaming out (paper section 5).

The paper's mode is half-duplex: while the user speaks, incoming video frames are encoded and prefilled
into the LLM's KV cache as they arrive; a speech start/end predictor (here :mod:`omni_core.speech_boundary`,
a small head trained on our data) decides when the utterance is over; only then are the audio features fed,
and the answer is generated token by token. So at the end of speech only the audio (and a few template
tokens) is left to prefill, whatever the length of the video or of the conversation before it.

Beyond the paper, the utterance's audio is encoded while it arrives too (``stream.audio_chunk_seconds``,
0 = the paper's way): each whole chunk since the speech start (less the pre-roll) becomes an audio item
of its own (Whisper + projector over that chunk alone), prefilled at once, so at the end of speech only
the last partial chunk is left. Chunks are a whole number of audio tokens long, so the turn has as many
audio tokens as the whole utterance would; the LLM sees the same layout, but each chunk's features come
from that chunk alone (``stream_latency.chunked_wer`` measures what this costs). A turn keeps the trained
layout (frames, then audio), so once the first chunk is in, later frames of the turn are not encoded.
And while the detector waits out its silence hangover, the turn is closed and prefilled as if speech ended
where the silence began (``stream.prefill_in_hangover``); speech that resumes takes that back. At the end
decision only the answer's first token is left.

:class:`OmniSession` holds one conversation:

- low level, for notebooks and tests: ``add_frame`` / ``add_text`` / ``add_audio`` (the utterance piece by
  piece, encoded in chunks) / ``end_turn(audio=...)`` / ``answer()``; every call prefills only the tokens
  that are new (``incremental=True``), or, for the baseline, nothing until ``end_turn`` re-encodes the
  whole conversation (``incremental=False``, the same items);
- real time: ``push_video_frame`` / ``push_audio`` run the speech detector on each chunk, open a turn
  at speech start, encode frames at ``video_fps`` and the audio in chunks while the user speaks, end the
  turn at speech end and (with ``auto_answer``) stream the answer from a background thread. New speech
  during an answer stops it (barge-in, beyond the paper) and opens the next turn; every turn reuses the
  same cache.

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
from omni_core.model_boundary import ModelBoundaryDetector, ModelBoundaryHead
from omni_core.speech_boundary import (
    SPEECH_BOUNDARY_SUBDIR,
    BoundaryDecider,
    SpeechBoundaryDetector,
    SpeechBoundaryHead,
)

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
class _Guess:
    """A turn closed during the silence hangover, as if speech ended at ``end_time``: what to restore if
    speech resumes instead (:meth:`OmniSession._take_back`)."""
    end_time: float
    n_ids: int
    n_media: int
    n_cached: int
    n_cached_media: int
    n_logits: int
    audio_open: bool
    video_open: bool
    pending: np.ndarray
    audio_seconds: float


@dataclass
class _Media:
    kind: Literal["video", "audio"]
    tensors: dict[str, torch.Tensor] = field(default_factory=dict)


class OmniSession:
    """One streamed conversation with an omni model (see the module docstring).

    Args:
        model: an ``OmniForConditionalGeneration`` (``build_model`` or ``from_pretrained``).
        processor: an ``OmniProcessor`` (or a tokenizer prepared with ``prepare_tokenizer``).
        speech_boundary: what decides speech start and end (:func:`boundary_decider`): the separate
            detector's head, the model's own boundary head, or a decider; needed by ``push_audio`` only.
        cfg: ``cfg.stream`` (thresholds, hangover, chunking, answer length).
        incremental: False = the baseline that re-encodes the whole conversation at each end of turn.
        auto_answer: ``push_audio`` starts the answer in a background thread at the end of speech.
        on_text: called with each finished piece of answer text as it streams.
        on_event: called with every :class:`StreamEvent`.
        record_logits: keep the prefill logits (tests compare them with a one-shot prefill).
        typed_text: text typed beside the speech, closing each turn that ``push_audio`` ends (after the audio,
            as in the manifests' layout); ``end_turn(text=...)`` gives it for one turn.
    """

    def __init__(self, model, processor,
                 speech_boundary: SpeechBoundaryHead | ModelBoundaryHead | BoundaryDecider | None = None,
                 cfg: StreamConfig | None = None, *, incremental: bool = True, auto_answer: bool = True,
                 on_text: Callable[[str], None] | None = None,
                 on_event: Callable[[StreamEvent], None] | None = None, record_logits: bool = False,
                 typed_text: str | None = None):
        self.model = model.eval()
        self.device = next(model.parameters()).device
        self.tokenizer = getattr(processor, "tokenizer", processor)
        self.cfg = cfg or StreamConfig()
        self.incremental, self.auto_answer, self.record_logits = incremental, auto_answer, record_logits
        self.on_text, self.on_event, self.typed_text = on_text, on_event, typed_text
        mc = model.config
        vc, ac = mc.vision_config, mc.audio_config
        self.image_size, self.video_max_tiles = vc.image_size, mc.video_max_tiles
        self.tile_tokens = tokens_per_tile(vc.image_size, vc.patch_size, mc.video_pool, mc.vision_pool_type)
        self.window_seconds = ac.max_source_positions * FRAME_SAMPLES / SAMPLING_RATE
        self.downsample = mc.audio_downsample
        token = self.downsample * FRAME_SAMPLES          # samples per audio token: chunks hold whole tokens only
        self.audio_chunk_samples = (max(1, round(self.cfg.audio_chunk_seconds * SAMPLING_RATE / token)) * token
                                    if self.cfg.audio_chunk_seconds > 0 else 0)
        self.extractor = getattr(processor, "feature_extractor", None) or feature_extractor(ac.num_mel_bins)
        self.max_positions = mc.text_config.max_position_embeddings
        self.tok = {(m, k): mc.media_token_id(m, k) for m in ("video", "audio") for k in ("start", "pad", "end")}
        self.eos_id = self.tokenizer.convert_tokens_to_ids(self.tokenizer.eos_token)
        self.suppress = suppressed_token_ids(self.tokenizer)   # media placeholders have no features to emit
        self._template_pieces()
        self.detector = boundary_decider(speech_boundary, model, self.cfg) if speech_boundary is not None else None
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
        self._audio_open = False                 # the turn's <|audio_start|> is in, its <|audio_end|> not yet
        self._pending = np.zeros(0, np.float32)  # add_audio samples not yet encoded (less than a chunk)
        self._utterance_next = 0                 # push_audio: index in _audio of the first sample not handed over
        self._last_frame_time = -float("inf")
        self._latest_frame: np.ndarray | None = None
        self._audio = np.zeros(0, np.float32)    # recent audio; sample 0 is at _audio_t0 on the stream clock
        self._audio_t0 = 0.0
        self._speech_start: float | None = None
        self._guess: _Guess | None = None        # the turn closed in the hangover, awaiting the end decision
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

    def _check_audio_closed(self, what: str) -> None:
        if self._audio_open:
            raise RuntimeError(f"{what} while the turn's audio span is open (add_audio): the template has the "
                               "frames before the audio and the text after it; pass text to end_turn")

    def add_frame(self, frame: np.ndarray) -> None:
        """Encode one video frame (HxWx3 uint8) into the open turn and prefill it now."""
        self.open_turn()
        if self.state != "listening":
            raise RuntimeError("add_frame after end_turn: answer() first, the next frame opens the next turn")
        self._check_audio_closed("add_frame")
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
        self._check_audio_closed("add_text")
        self._close_video()
        self._append(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def _append_audio(self, wav: np.ndarray, close: bool) -> None:
        """One audio item (its own encoder pass) into the turn's audio span, opening the span if needed."""
        ids = [] if self._audio_open else [self.tok["audio", "start"]]
        item = None
        if len(wav):
            feats = audio_to_features(wav, self.extractor, self.window_seconds)
            n_tok = audio_num_tokens(len(wav), self.downsample)
            item = _Media("audio", {"audio_features": feats, "audio_window_counts": torch.tensor([feats.shape[0]]),
                                    "audio_token_counts": torch.tensor([n_tok])})
            ids += [self.tok["audio", "pad"]] * n_tok
        self._append(ids + ([self.tok["audio", "end"]] if close else []), item)
        self._audio_open = not close
        self.turns[-1].audio_seconds += len(wav) / SAMPLING_RATE

    def _encode_chunks(self) -> int:
        """Move each whole ``audio_chunk_samples`` chunk of the pending audio into the turn, one item each
        (so a chunk's encoding never depends on how the audio was pieced). Returns the number of chunks."""
        n = self.audio_chunk_samples
        k = len(self._pending) // n if n else 0
        if k:
            self._close_video()
            for i in range(k):
                self._append_audio(self._pending[i * n:(i + 1) * n], close=False)
            self._pending = self._pending[k * n:]
        return k

    def add_audio(self, audio: np.ndarray) -> int:
        """More of the user's utterance (16 kHz mono), as it arrives. Every whole chunk of
        ``stream.audio_chunk_seconds`` since the utterance's first sample is encoded as an audio item of its
        own and, incrementally, prefilled now; the rest waits for more audio or for :meth:`end_turn`, which
        closes the audio span. Returns the number of chunks encoded (always 0 with chunking off)."""
        self.open_turn()
        if self.state != "listening":
            raise RuntimeError("add_audio after end_turn: answer() first")
        self._pending = np.concatenate([self._pending, np.asarray(audio, dtype=np.float32).reshape(-1)])
        k = self._encode_chunks()
        if k and self.incremental:
            self._flush()
        return k

    def end_turn(self, audio: np.ndarray | None = None, text: str | None = None) -> int:
        """Close the user turn: feed the utterance's audio (16 kHz mono; after :meth:`add_audio`, the rest
        of it) and optional text, then the assistant header. Returns the number of tokens prefilled now
        (the end-of-speech work). Audio given here alone is one item, whatever ``audio_chunk_seconds``."""
        self.open_turn()
        stats = self.turns[-1]
        if stats.end_of_speech is None:
            stats.end_of_speech = time.perf_counter()
        stats.tokens_prefilled_after_speech = self._close_turn(audio, text)
        self.state = "ready"
        return stats.tokens_prefilled_after_speech

    def _close_turn(self, audio: np.ndarray | None, text: str | None = None) -> int:
        """:meth:`end_turn`'s work: the rest of the audio, the text, the template's close; prefilled."""
        self._close_video()
        wav = np.zeros(0, np.float32) if audio is None else np.asarray(audio, dtype=np.float32).reshape(-1)
        if self._audio_open or len(self._pending):      # an utterance streamed with add_audio: chunk its rest alike
            self._pending = np.concatenate([self._pending, wav])
            self._encode_chunks()
            wav, self._pending = self._pending, self._pending[:0]
        if len(wav) or self._audio_open:
            self._append_audio(wav, close=True)
        if text:
            self._append(self.tokenizer(text, add_special_tokens=False)["input_ids"])
        self._append(self.user_close)
        return self._flush(keep_last=True)

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

    # ------------------------------------------------------------------------------- the hangover's guess
    def _guess_end(self) -> None:
        """While the detector's silence hangover runs, close and prefill the turn as if speech ended where the
        silence began (once the post-roll is in); take that back if speech resumes. The end decision then
        finds the turn prefilled, and only the answer is left (``stream.prefill_in_hangover``)."""
        since = self.detector.silence_since
        if self._guess is not None and (since is None or abs(since - self._guess.end_time) > 1e-6):
            self._take_back()                          # speech went on: the guess was wrong
        if (self._guess is None and since is not None and self.incremental and self.cfg.prefill_in_hangover
                and self.clock - since >= self.cfg.preroll_seconds):
            stats = self.turns[-1]
            self._guess = _Guess(since, len(self.ids), len(self.media), self.n_cached, self.n_cached_media,
                                 len(self.logits), self._audio_open, self._video_open, self._pending,
                                 stats.audio_seconds)
            b = int((since + self.cfg.preroll_seconds - self._audio_t0) * SAMPLING_RATE)
            self._close_turn(self._audio[self._utterance_next:b], self.typed_text)

    def _confirm_guess(self) -> None:
        stats = self.turns[-1]
        stats.end_of_speech = time.perf_counter()
        stats.tokens_prefilled_after_speech = 0
        self._guess = None
        self.state = "ready"

    def _take_back(self) -> None:
        """Undo a guessed close: the tokens, media and cache positions it added, and the turn's open spans."""
        g, self._guess = self._guess, None
        if g is None:
            return
        del self.ids[g.n_ids:], self.media[g.n_media:], self.logits[g.n_logits:]
        extra = self.cache.get_seq_length() - g.n_cached
        if extra > 0:
            self.cache.crop(-extra)
        self.n_cached, self.n_cached_media = g.n_cached, g.n_cached_media
        self._audio_open, self._video_open, self._pending = g.audio_open, g.video_open, g.pending
        self.turns[-1].audio_seconds = g.audio_seconds

    # -------------------------------------------------------------------------------------- real time
    def push_video_frame(self, frame: np.ndarray) -> bool:
        """A camera frame at the current stream time. While the user speaks, frames are encoded at
        ``video_fps`` (the turn's frame budget permitting) until the first audio chunk opens the audio span;
        otherwise only the latest is kept, to open the next turn with. Returns whether the frame was encoded."""
        now = self.clock
        if (self.state != "listening" or self._audio_open or self._guess is not None   # frames come before the audio
                or now - self._last_frame_time < 1.0 / self.cfg.video_fps - 1e-6
                or (self.turns and self.turns[-1].frames >= self.cfg.max_frames)):
            self._latest_frame = frame
            return False
        self.add_frame(frame)
        self._last_frame_time, self._latest_frame = now, None
        return True

    def push_audio(self, chunk: np.ndarray, sampling_rate: int = SAMPLING_RATE) -> list[StreamEvent]:
        """A microphone chunk (mono float). Runs the speech detector; at speech start opens a turn (barge-in
        if an answer is streaming), while speech goes on encodes the utterance's audio chunk by chunk
        (:meth:`add_audio`), at speech end closes the turn with the rest of it and answers."""
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
                self._utterance_next = max(0, int((ev.time - self.cfg.preroll_seconds - self._audio_t0)
                                                  * SAMPLING_RATE))
                self.open_turn()
                if self._latest_frame is not None:
                    self.push_video_frame(self._latest_frame)
                out.append(self._emit("speech_start"))
            elif ev.kind == "speech_end" and self._speech_start is not None:
                b = int((ev.time + self.cfg.preroll_seconds - self._audio_t0) * SAMPLING_RATE)
                self._speech_start = None
                out.append(self._emit("speech_end"))
                if self._guess is not None and abs(self._guess.end_time - ev.time) < 1e-6:
                    self._confirm_guess()              # the turn was closed and prefilled in the hangover
                else:
                    self._take_back()
                    self.end_turn(audio=self._audio[self._utterance_next:b], text=self.typed_text)
                if self.auto_answer:
                    self.answer_async()
        if self._speech_start is not None and self.state == "listening":
            self._guess_end()
        if (self._speech_start is not None and self.audio_chunk_samples and self.state == "listening"
                and self._guess is None):
            # no speech end yet, so the utterance ends after clock - min_silence (the detector's hangover):
            # the audio before that, plus the post-roll, is surely the utterance's; stream it now
            hangover = self.detector.min_silence * self.detector.hop_seconds
            sure_s = self.clock - hangover + self.cfg.preroll_seconds - self._audio_t0
            sure = min(len(self._audio), int(sure_s * SAMPLING_RATE))
            if sure > self._utterance_next:
                self.add_audio(self._audio[self._utterance_next:sure])
                self._utterance_next = sure
        if self._speech_start is None:                    # keep only a pre-roll of audio between utterances
            keep = int(self.cfg.preroll_seconds * SAMPLING_RATE) + len(wav)
            drop = max(0, len(self._audio) - keep)
            self._audio, self._audio_t0 = self._audio[drop:], self._audio_t0 + drop / SAMPLING_RATE
        return out


def boundary_decider(speech_boundary: SpeechBoundaryHead | ModelBoundaryHead | BoundaryDecider, model,
                     cfg: StreamConfig) -> BoundaryDecider:
    """The decider a session runs on each microphone chunk: a decider as given, or one built on a head with
    the config's rules (threshold, minimum speech, silence hangover): the separate detector's head over
    log-mel frames, or the model's own head over its LLM's hidden states (:mod:`omni_core.model_boundary`)."""
    if isinstance(speech_boundary, BoundaryDecider):
        return speech_boundary
    rules = (cfg.end_threshold, cfg.min_speech_seconds, cfg.min_silence_seconds)
    if isinstance(speech_boundary, ModelBoundaryHead):
        return ModelBoundaryDetector(model, speech_boundary, *rules)
    return SpeechBoundaryDetector(speech_boundary, *rules)


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


def load_session_parts(cfg: Config, checkpoint: str | Path | None = None,
                       speech_boundary_dir: str | Path | None = None, model_boundary_dir: str | Path | None = None):
    """(model, processor, boundary head) for a live session. A ``checkpoint`` without a model means the
    profile's model untrained (pretrained parts loaded, the rest random-init; said on stderr). The head
    follows ``cfg.stream.boundary``:
    ``detector``: the separate detector's, from ``speech_boundary_dir``, else ``<checkpoint>/speech_boundary``,
    else trained in seconds (and saved where a directory was named); ``model``: the model's own, from
    ``model_boundary_dir``, else ``model_boundary/`` beside the stage checkpoints (``python -m omni_core.model_boundary``)."""
    import sys

    from omni_core.model_boundary import MODEL_BOUNDARY_SUBDIR
    from omni_core.speech_boundary import load_or_train_speech_boundary

    ckpt = Path(checkpoint) if checkpoint else None
    if ckpt is not None and not (ckpt / "config.json").exists():
        print(f"[demo] {ckpt} holds no model: using the {cfg.profile} profile's model untrained (its pretrained "
              "parts from models/, the rest random-init)", file=sys.stderr)
        ckpt = None
    model, processor = load_model(cfg, ckpt)
    if cfg.stream.boundary == "model":
        head_dir = (Path(model_boundary_dir) if model_boundary_dir
                    else ckpt.parent.parent / MODEL_BOUNDARY_SUBDIR if ckpt is not None else None)
        if head_dir is None or not (head_dir / "config.json").exists():
            raise FileNotFoundError(f"stream.boundary: model needs the model's boundary head, and {head_dir} holds "
                                    "none: train it with `python -m omni_core.model_boundary --checkpoint "
                                    f"{ckpt} --out <dir>` (the pipeline's model_boundary stage), or set "
                                    "stream.boundary: detector")
        return model, processor, ModelBoundaryHead.from_pretrained(str(head_dir)).eval()
    head_dir = (Path(speech_boundary_dir) if speech_boundary_dir
                else ckpt / SPEECH_BOUNDARY_SUBDIR if ckpt is not None else None)
    return model, processor, load_or_train_speech_boundary(head_dir)


def add_session_arguments(ap) -> None:
    """The command-line options of a live session's parts (``python -m omni_core.web``, ``demo_realtime``)."""
    from omni_core.config import REPO_ROOT

    ap.add_argument("--checkpoint", default=None, help="model directory, e.g. checkpoints/2_sft/model (tiny) or "
                    "checkpoints/small/2_sft/model; absent = the profile's model untrained (the plumbing only)")
    ap.add_argument("--speech-boundary", default=None, help="the separate detector's head directory (default "
                    "<checkpoint>/speech_boundary; trained in seconds if there is none)")
    ap.add_argument("--model-boundary", default=None, help="the model's own boundary head directory, used when "
                    "stream.boundary is model (default: model_boundary/ beside the stage checkpoints)")
    ap.add_argument("--params", default=str(REPO_ROOT / "params.yaml"))
    ap.add_argument("--profile", default=None, help="tiny or small (default: params.yaml's)")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default; 1 is steadier "
                    "on a busy machine)")


def session_parts_from_args(args):
    """(cfg, model, processor, boundary head) from :func:`add_session_arguments`' options, offline."""
    import os

    from omni_core.config import load_config

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = load_config(args.params, profile=args.profile)
    return (cfg, *load_session_parts(cfg, args.checkpoint, args.speech_boundary, args.model_boundary))
