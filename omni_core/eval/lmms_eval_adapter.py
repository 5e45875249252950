"""lmms-eval adapter: score an omni_core checkpoint on the paper's public benchmarks (MMBench, MMMU,
VideoMME, Fleurs, ... all lmms-eval tasks) where a user has them.

lmms-eval is optional and imported lazily: :class:`OmniLMMsCore` turns lmms-eval requests (chat
``doc_to_messages`` or legacy ``contexts`` + ``doc_to_visual``) into our messages and runs the same
greedy decoding as :mod:`omni_core.eval.runner`; :func:`lmms_class` wraps it in a subclass of
``lmms_eval.api.model.lmms`` when lmms-eval is installed. In-process use (as nanoVLM does)::

    from lmms_eval import evaluator
    from omni_core.eval.lmms_eval_adapter import lmms_class
    model = lmms_class()(pretrained="checkpoints/2_sft/model", batch_size=8)
    evaluator.simple_evaluate(model=model, tasks=["mmbench_en_dev"], batch_size=8)

or ``register()`` then ``python -m lmms_eval --model omni_core --model_args pretrained=...``.
Sampling settings in ``gen_kwargs`` (temperature, top_p) are ignored: decoding is greedy, like the
paper's zero-shot evaluation; ``max_new_tokens`` and ``until`` (stop strings) are honoured.
"""
from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from omni_core.config import REPO_ROOT, Config, load_config
from omni_core.model.labels import IGNORE_INDEX

from .runner import Sample, _to, generate_answers, load_checkpoint

MODEL_NAME = "omni_core"
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".gif")
INSTALL_HINT = ("lmms-eval is not installed: pip install lmms-eval (then `from omni_core.eval.lmms_eval_adapter import lmms_class`)."
                " omni_core does not depend on it.")


# ------------------------------------------------------------------------------------- conversion
def to_part(kind: str, value: Any, fps: float = 1.0, max_frames: int = 48) -> dict:
    """One lmms-eval media item (PIL image, path, HF audio dict, frame list) -> our in-memory content part."""
    from omni_core.processing import load_audio, load_video_frames

    if kind == "image":
        if isinstance(value, (str, Path)):
            value = Image.open(value).convert("RGB")
        elif isinstance(value, dict) and "bytes" in value:              # HF Image feature, undecoded
            value = Image.open(io.BytesIO(value["bytes"])).convert("RGB")
        return {"type": "image", "image": value}
    if kind == "video":
        if isinstance(value, (list, tuple)):
            return {"type": "video", "frames": [np.asarray(f) for f in value]}
        path = Path(value)
        return {"type": "video", "frames": load_video_frames({"path": path.name}, path.parent, fps, max_frames)}
    if kind == "audio":
        if isinstance(value, dict) and "array" in value:
            return {"type": "audio", "array": np.asarray(value["array"], dtype=np.float32),
                    "sampling_rate": int(value["sampling_rate"])}
        path = Path(value)
        return {"type": "audio", "array": load_audio({"path": path.name}, path.parent), "sampling_rate": 16000}
    raise ValueError(f"lmms-eval media of type {kind!r} is not supported; use image, video or audio")


def _kind_of(item: Any) -> str:
    """Media type of a legacy ``doc_to_visual`` item."""
    if isinstance(item, Image.Image):
        return "image"
    if isinstance(item, dict) and "array" in item:
        return "audio"
    if isinstance(item, (str, Path)) and str(item).lower().endswith(VIDEO_SUFFIXES):
        return "video"
    if isinstance(item, (str, Path)) and str(item).lower().endswith((".wav", ".flac", ".mp3", ".ogg")):
        return "audio"
    return "image"


class OmniLMMsCore:
    """Request conversion + batched greedy generation + continuation scoring, without lmms-eval."""

    def __init__(self, pretrained: str = "checkpoints/2_sft/model", params: str | Path = REPO_ROOT / "params.yaml",
                 batch_size: int | str = 1, max_new_tokens: int | None = None, device: str | None = None,
                 model=None, processor=None, cfg: Config | None = None, **_: Any):
        self.cfg = cfg or load_config(params)
        if model is None or processor is None:
            model, processor = load_checkpoint(self.cfg, pretrained, device)
        self.model = model.to(device) if device else model
        self.processor = processor
        self.batch_size_per_gpu = int(batch_size)
        self.max_new_tokens = max_new_tokens or self.cfg.eval.max_new_tokens

    def to_messages(self, raw: Sequence[dict]) -> list[dict]:
        """lmms-eval chat messages (content parts with ``url``) -> our messages (in-memory media parts)."""
        v = self.cfg.model.vision
        out = []
        for m in raw:
            content = m["content"] if isinstance(m["content"], list) else [{"type": "text", "text": m["content"]}]
            parts = [{"type": "text", "text": c["text"]} if c["type"] == "text"
                     else to_part(c["type"], c.get("url"), v.video_fps, v.video_max_frames) for c in content]
            out.append({"role": m["role"], "content": parts})
        return out

    def legacy_messages(self, context: str, visuals: Sequence[Any]) -> list[dict]:
        """Legacy (simple-model) request: media first, then the question with ``<image>`` placeholders removed."""
        v = self.cfg.model.vision
        parts = [to_part(_kind_of(x), x, v.video_fps, v.video_max_frames) for x in visuals or []]
        text = context.replace("<image>", "").strip()
        return [{"role": "user", "content": parts + [{"type": "text", "text": text}]}]

    def generate(self, conversations: Sequence[list[dict]], gen_kwargs: Sequence[dict]) -> list[str]:
        """Greedy answers; requests are batched by equal ``max_new_tokens``; ``until`` strings cut the answer."""
        answers: list[str | None] = [None] * len(conversations)
        by_len: dict[int, list[int]] = {}
        for i, kw in enumerate(gen_kwargs):
            by_len.setdefault(int(kw.get("max_new_tokens", self.max_new_tokens)), []).append(i)
        for max_new, idx in by_len.items():
            samples = [Sample(str(i), "lmms", conversations[i], conversations[i], "", "") for i in idx]
            for i, text in zip(idx, generate_answers(self.model, self.processor, samples, ".", self.batch_size_per_gpu,
                                                     max_new)):
                until = gen_kwargs[i].get("until") or []
                for stop in [until] if isinstance(until, str) else until:
                    if stop:
                        text = text.split(stop)[0]
                answers[i] = text.strip()
        return [a or "" for a in answers]

    @torch.no_grad()
    def score_continuation(self, messages: list[dict], continuation: str) -> tuple[float, bool]:
        """(log-probability of ``continuation`` as the assistant's answer, whether greedy decoding gives it)."""
        conv = messages + [{"role": "assistant", "content": [{"type": "text", "text": continuation}]}]
        feat = self.processor(conv, base_dir=".")
        batch = _to({k: (v[None] if k in ("input_ids", "attention_mask") else v) for k, v in feat.items()
                     if k != "labels"}, self.model)
        logits = self.model(**batch).logits[0, :-1].float()
        target = feat["labels"][1:].to(logits.device)
        pos = (target != IGNORE_INDEX).nonzero().flatten()[:-1]          # the answer's tokens, not the end-of-turn token
        logp = torch.log_softmax(logits[pos], dim=-1)
        return float(logp.gather(1, target[pos, None]).sum()), bool((logits[pos].argmax(-1) == target[pos]).all())


# ---------------------------------------------------------------------------------------- lmms-eval
def lmms_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("lmms_eval") is not None


def lmms_class():
    """The lmms-eval model class (a subclass of ``lmms_eval.api.model.lmms``); needs lmms-eval installed."""
    try:
        from lmms_eval.api.model import lmms
    except ImportError as e:
        raise ImportError(INSTALL_HINT) from e

    class OmniLMMs(lmms, OmniLMMsCore):
        """omni_core checkpoint as an lmms-eval chat model (``doc_to_messages``); legacy requests work too."""
        is_simple = False

        def __init__(self, pretrained: str = "checkpoints/2_sft/model", **kwargs: Any):
            lmms.__init__(self)
            OmniLMMsCore.__init__(self, pretrained, **kwargs)

        def _conversation(self, args: tuple) -> tuple[list[dict], dict]:
            if len(args) == 5:                               # chat: doc_to_messages, gen_kwargs, doc_id, task, split
                doc_to_messages, gen_kwargs, doc_id, task, split = args
                raw = doc_to_messages(self.task_dict[task][split][doc_id])
                raw = [m.model_dump() if hasattr(m, "model_dump") else m for m in getattr(raw, "messages", raw)]
                return self.to_messages(raw), gen_kwargs
            context, gen_kwargs, doc_to_visual, doc_id, task, split = args   # legacy simple model
            return self.legacy_messages(context, doc_to_visual(self.task_dict[task][split][doc_id])), gen_kwargs

        def generate_until(self, requests) -> list[str]:
            convs = [self._conversation(r.args) for r in requests]
            return self.generate([c for c, _ in convs], [dict(kw or {}) for _, kw in convs])

        def loglikelihood(self, requests) -> list[tuple[float, bool]]:
            out = []
            for r in requests:
                context, doc_to_target, doc_to_visual, doc_id, task, split = r.args
                doc = self.task_dict[task][split][doc_id]
                target = doc_to_target(doc) if callable(doc_to_target) else doc_to_target
                out.append(self.score_continuation(self.legacy_messages(context, doc_to_visual(doc)), str(target)))
            return out

        def generate_until_multi_round(self, requests) -> list[str]:
            raise NotImplementedError("multi-round generation is not supported by the omni_core adapter")

    return OmniLMMs


def register(name: str = MODEL_NAME):
    """Register the adapter with lmms-eval's model registry under ``name`` (for ``--model omni_core``)."""
    try:
        from lmms_eval.api.registry import register_model
    except ImportError as e:
        raise ImportError(INSTALL_HINT) from e
    return register_model(name)(lmms_class())
