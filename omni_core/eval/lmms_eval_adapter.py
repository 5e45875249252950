"""lmms-eval adapter: score an omni_core checkpoint on the paper's public benchmarks (MMBench, MMMU,
VideoMME, ... any lmms-eval task) and on our own test split through lmms-eval's evaluator.

lmms-eval (0.7.x, ``requirements-lmms.txt``) is optional and imported lazily. :class:`OmniLMMsCore` turns
its requests into our messages and runs the same greedy decoding as :mod:`omni_core.eval.runner`; the
classes :class:`OmniLMMs` (chat) and :class:`OmniLMMsSimple` (simple), built on first access, wrap it in
``lmms_eval.api.model.lmms``. The request protocol of lmms-eval 0.7 (``Instance.args``):

- chat ``generate_until`` (``ConfigurableMessagesTask``, models with ``is_simple = False``):
  ``(context, doc_to_messages, gen_kwargs, doc_id, task, split)``
- plain ``generate_until`` (``ConfigurableTask``, ``is_simple = True``):
  ``(context, gen_kwargs, doc_to_visual, doc_id, task, split)``
- ``loglikelihood``: ``(context, doc_to_target or continuation, doc_to_visual, doc_id, task, split)``, or
  ``(context, continuation)`` for the unconditional half of ``acc_mutual_info``

In-process use::

    from lmms_eval.evaluator import simple_evaluate
    from omni_core.eval.lmms_eval_adapter import OmniLMMs
    simple_evaluate(model=OmniLMMs(pretrained="checkpoints/2_sft/model"), tasks=["mmbench_en_dev"])

or from the shell ``python -m omni_core.eval.lmms_eval_adapter --model omni_core --tasks ...`` (lmms-eval's
CLI with ``omni_core`` registered; ``--force_simple`` picks the simple class, which the loglikelihood and
multiple-choice tasks need: lmms-eval builds those only for simple models).
Sampling settings in ``gen_kwargs`` (temperature, top_p) are ignored: decoding is greedy, like the
paper's zero-shot evaluation; ``max_new_tokens`` and ``until`` (stop strings) are honoured.
"""
from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from omni_core.config import REPO_ROOT, Config, load_config
from omni_core.model.labels import IGNORE_INDEX

from .runner import Sample, _to, generate_answers, load_checkpoint, suppressed_token_ids

MODEL_NAME = "omni_core"
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".gif")
AUDIO_SUFFIXES = (".wav", ".flac", ".mp3", ".ogg", ".m4a", ".opus")
INSTALL_HINT = ("lmms-eval is not installed: `pip install --no-deps -r requirements-lmms.txt` (what `make setup` "
                "does). omni_core itself does not depend on it.")


# ------------------------------------------------------------------------------------- conversion
def _audio_part(value: Any) -> dict:
    if isinstance(value, dict) and "array" in value:                    # HF Audio feature (datasets < 4)
        return {"type": "audio", "array": np.asarray(value["array"], dtype=np.float32),
                "sampling_rate": int(value["sampling_rate"])}
    if hasattr(value, "get_all_samples"):                               # torchcodec AudioDecoder (datasets >= 4)
        s = value.get_all_samples()
        return {"type": "audio", "array": s.data.numpy().mean(axis=0).astype(np.float32),
                "sampling_rate": int(s.sample_rate)}
    from omni_core.processing import load_audio

    path = Path(value)
    return {"type": "audio", "array": load_audio({"path": path.name}, path.parent), "sampling_rate": 16000}


def to_part(kind: str, value: Any, cfg: Config) -> dict:
    """One lmms-eval media item (PIL image, file path, HF image / audio dict, frame list) -> our in-memory
    content part. Files are decoded with the processor's own loaders, so a path answers like our manifests."""
    from omni_core.processing import load_image, load_video_frames

    v = cfg.model.vision
    if isinstance(value, dict) and kind == "video" and ("url" in value or "path" in value):
        value = value.get("url") or value.get("path")                   # lmms-eval video dict with start / end
    if kind == "image":
        if isinstance(value, (str, Path)):
            path = Path(value)
            value = load_image({"path": path.name}, path.parent, v.image_size * v.max_tiles)
        elif isinstance(value, dict) and value.get("bytes"):            # HF Image feature, undecoded
            value = Image.open(io.BytesIO(value["bytes"]))
        elif isinstance(value, dict) and value.get("path"):
            path = Path(value["path"])
            value = load_image({"path": path.name}, path.parent, v.image_size * v.max_tiles)
        return {"type": "image", "image": value}
    if kind == "video":
        if isinstance(value, (list, tuple)):
            return {"type": "video", "frames": [f if isinstance(f, Image.Image) else np.asarray(f) for f in value]}
        path = Path(value)
        return {"type": "video", "frames": load_video_frames({"path": path.name}, path.parent, v.video_fps,
                                                             v.video_max_frames)}
    if kind == "audio":
        return _audio_part(value)
    raise ValueError(f"lmms-eval media of type {kind!r} is not supported; use image, video or audio")


def _kind_of(item: Any) -> str:
    """Media type of a plain request's ``doc_to_visual`` item."""
    if isinstance(item, Image.Image):
        return "image"
    if (isinstance(item, dict) and "array" in item) or hasattr(item, "get_all_samples"):
        return "audio"
    if isinstance(item, (str, Path)) and str(item).lower().endswith(VIDEO_SUFFIXES):
        return "video"
    if isinstance(item, (str, Path)) and str(item).lower().endswith(AUDIO_SUFFIXES):
        return "audio"
    return "image"


def _plain_messages(raw: Any) -> list[dict]:
    """``doc_to_messages`` output (list of dicts, ``ChatMessages`` or pydantic ``ChatMessage`` items) -> dicts."""
    if isinstance(raw, tuple):                      # (messages, terminal, ...) of a multi-round task
        raise NotImplementedError("multi-round doc_to_messages is not supported by the omni_core adapter")
    raw = getattr(raw, "messages", raw)
    return [m.model_dump() if hasattr(m, "model_dump") else dict(m) for m in raw]


def _is_chat(args: tuple) -> bool:
    """Chat and plain generate_until requests both have 6 fields; the second is a function only in chat ones."""
    if len(args) != 6:
        raise ValueError(f"generate_until request with {len(args)} fields; lmms-eval 0.7 sends 6: (context, "
                         "doc_to_messages, gen_kwargs, doc_id, task, split) or (context, gen_kwargs, doc_to_visual, "
                         "doc_id, task, split)")
    return callable(args[1])


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
        # lmms-eval passes batch_size="auto" / None through create_from_arg_string
        self.batch_size_per_gpu = int(batch_size) if str(batch_size).isdigit() else self.cfg.eval.batch_size
        self.max_new_tokens = int(max_new_tokens or self.cfg.eval.max_new_tokens)
        self.task_dict: dict = {}                   # lmms-eval fills it: {task: {split: docs}}

    # ---- conversion
    def to_messages(self, raw: Sequence[dict]) -> list[dict]:
        """lmms-eval chat messages (content parts with ``url``, or a plain string) -> our messages."""
        out = []
        for m in raw:
            content = m["content"] if isinstance(m["content"], list) else [{"type": "text", "text": m["content"]}]
            parts = [{"type": "text", "text": c["text"]} if c["type"] == "text"
                     else to_part(c["type"], c.get("url"), self.cfg) for c in content]
            out.append({"role": m["role"], "content": parts})
        return out

    def legacy_messages(self, context: str, visuals: Sequence[Any] | None) -> list[dict]:
        """Plain (simple-model) request: media first, then the question with ``<image>`` placeholders removed."""
        parts = [to_part(_kind_of(x), x, self.cfg) for x in visuals or []]
        text = context.replace("<image>", "").strip()
        return [{"role": "user", "content": parts + [{"type": "text", "text": text}]}]

    def _doc(self, task: str, split: str, doc_id: int) -> Any:
        try:
            return self.task_dict[task][split][doc_id]
        except (KeyError, IndexError) as e:
            raise KeyError(f"lmms-eval request for {task}/{split}/{doc_id}: the model's task_dict lacks that doc "
                           "(simple_evaluate fills it; set model.task_dict[task] = dataset when calling directly)") from e

    def request_messages(self, args: tuple) -> tuple[list[dict], dict]:
        """(our messages, gen_kwargs) of one generate_until request's ``args``."""
        if _is_chat(args):
            _, doc_to_messages, gen_kwargs, doc_id, task, split = args
            raw = _plain_messages(doc_to_messages(self._doc(task, split, doc_id)))
            return self.to_messages(raw), dict(gen_kwargs or {})
        context, gen_kwargs, doc_to_visual, doc_id, task, split = args
        visuals = doc_to_visual(self._doc(task, split, doc_id)) if callable(doc_to_visual) else doc_to_visual
        return self.legacy_messages(context, visuals), dict(gen_kwargs or {})

    def loglikelihood_inputs(self, args: tuple) -> tuple[list[dict], str]:
        """(our messages, continuation) of one loglikelihood request's ``args``."""
        if len(args) == 2:                          # acc_mutual_info's unconditional request: no doc, no media
            context, continuation = args
            return self.legacy_messages(context, None), str(continuation)
        if len(args) != 6:
            raise ValueError(f"loglikelihood request with {len(args)} fields; lmms-eval 0.7 sends (context, "
                             "doc_to_target or continuation, doc_to_visual, doc_id, task, split)")
        context, target, doc_to_visual, doc_id, task, split = args
        doc = self._doc(task, split, doc_id)
        target = target(doc) if callable(target) else target
        if isinstance(target, (list, tuple)):       # several references: lmms-eval scores the first
            target = target[0]
        visuals = doc_to_visual(doc) if callable(doc_to_visual) else doc_to_visual
        return self.legacy_messages(context, visuals), str(target)

    # ---- model
    def generate(self, conversations: Sequence[list[dict]], gen_kwargs: Sequence[dict]) -> list[str]:
        """Greedy answers; requests are batched by equal ``max_new_tokens``; ``until`` strings cut the answer."""
        answers: list[str | None] = [None] * len(conversations)
        by_len: dict[int, list[int]] = {}
        for i, kw in enumerate(gen_kwargs):
            by_len.setdefault(int(kw.get("max_new_tokens") or self.max_new_tokens), []).append(i)
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
        """(log-probability of ``continuation`` as the assistant's answer, whether greedy decoding gives it).
        The leading space lmms-eval puts before a continuation (``target_delimiter``) is dropped: in a chat
        template the answer starts its own turn."""
        conv = messages + [{"role": "assistant", "content": [{"type": "text", "text": continuation.lstrip()}]}]
        feat = self.processor(conv, base_dir=".")
        batch = _to({k: (v[None] if k in ("input_ids", "attention_mask") else v) for k, v in feat.items()
                     if k != "labels"}, self.model)
        logits = self.model(**batch).logits[0, :-1].float()
        target = feat["labels"][1:].to(logits.device)
        pos = (target != IGNORE_INDEX).nonzero().flatten()[:-1]          # the answer's tokens, not the end-of-turn token
        logp = torch.log_softmax(logits[pos], dim=-1)
        greedy = logits[pos].clone()
        greedy[:, suppressed_token_ids(self.processor.tokenizer)] = float("-inf")     # as generate() decodes
        return float(logp.gather(1, target[pos, None]).sum()), bool((greedy.argmax(-1) == target[pos]).all())

    # ---- the lmms-eval model interface (lmms.generate_until / loglikelihood)
    def generate_until(self, requests: Sequence[Any]) -> list[str]:
        convs = [self.request_messages(r.args) for r in requests]
        return self.generate([c for c, _ in convs], [kw for _, kw in convs])

    def loglikelihood(self, requests: Sequence[Any]) -> list[tuple[float, bool]]:
        return [self.score_continuation(*self.loglikelihood_inputs(r.args)) for r in requests]

    def generate_until_multi_round(self, requests: Sequence[Any]) -> list[str]:
        raise NotImplementedError("multi-round generation is not supported by the omni_core adapter")


# ---------------------------------------------------------------------------------------- lmms-eval
def lmms_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("lmms_eval") is not None


_CLASSES: dict[str, type] = {}


def _filelock_compat() -> None:
    """simple_evaluate patches ``filelock._api`` (filelock 3.x) against a deadlock of its singleton locks; the
    project's filelock 4 has no such module and no such mode, so the patch is marked done instead of failing."""
    import importlib.util

    if importlib.util.find_spec("filelock._api") is None:
        from lmms_eval import evaluator

        evaluator._enable_reentrant_filelocks._patched = True


def lmms_class(simple: bool = False) -> type:
    """The lmms-eval model class, a subclass of ``lmms_eval.api.model.lmms``: chat (tasks send
    ``doc_to_messages``) or ``simple`` (``doc_to_visual``; needed for loglikelihood tasks). Needs lmms-eval."""
    name = "OmniLMMsSimple" if simple else "OmniLMMs"
    if name in _CLASSES:
        return _CLASSES[name]
    try:
        from lmms_eval.api.model import lmms
    except ImportError as e:
        raise ImportError(INSTALL_HINT) from e
    _filelock_compat()

    def __init__(self, pretrained: str = "checkpoints/2_sft/model", **kwargs: Any) -> None:
        lmms.__init__(self)
        OmniLMMsCore.__init__(self, pretrained, **kwargs)

    doc = (f"omni_core checkpoint as an lmms-eval {'simple' if simple else 'chat'} model "
           f"(requests with {'doc_to_visual' if simple else 'doc_to_messages'}; the other kind works too).")
    # lmms' abstract methods come first in the MRO, so the core's implementations are bound explicitly
    body = {"is_simple": simple, "__init__": __init__, "__doc__": doc, "__module__": __name__,
            "batch_size": property(lambda self: self.batch_size_per_gpu),
            **{m: getattr(OmniLMMsCore, m) for m in ("generate_until", "loglikelihood", "generate_until_multi_round")}}
    _CLASSES[name] = type(name, (lmms, OmniLMMsCore), body)
    return _CLASSES[name]


def __getattr__(name: str) -> type:
    """``OmniLMMs`` / ``OmniLMMsSimple`` as module attributes, so lmms-eval's registry imports them by path."""
    if name in ("OmniLMMs", "OmniLMMsSimple"):
        return lmms_class(simple=name == "OmniLMMsSimple")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def register(name: str = MODEL_NAME) -> None:
    """Register the adapter with lmms-eval's model registry, so ``simple_evaluate(model=name, ...)`` and
    lmms-eval's CLI (``--model omni_core [--force_simple]``) in this process find it."""
    try:
        from lmms_eval.models import MODEL_REGISTRY_V2
        from lmms_eval.models.registry_v2 import ModelManifest
    except ImportError as e:
        raise ImportError(INSTALL_HINT) from e
    MODEL_REGISTRY_V2.register_manifest(ModelManifest(model_id=name, chat_class_path=f"{__name__}.OmniLMMs",
                                                      simple_class_path=f"{__name__}.OmniLMMsSimple"), overwrite=True)


def main(argv: Sequence[str] | None = None, cli: Callable[[], Any] | None = None) -> Any:
    """lmms-eval's command line with ``omni_core`` registered (``python -m omni_core.eval.lmms_eval_adapter``)."""
    import sys

    register()
    if cli is None:
        from lmms_eval.__main__ import cli_evaluate as cli
    if argv is not None:
        sys.argv = [sys.argv[0], *argv]
    return cli()


if __name__ == "__main__":
    main()
