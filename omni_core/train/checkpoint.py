"""Checkpoints of a stage: the HF export (`model/`) and the exact training state for resume (`state/`).

Layout of `checkpoints/<stage>/`:
- `model/`: `save_pretrained` of model + processor (ZeRO-3 weights gathered, LoRA merged): what the
  next stage, the evaluation and users load.
- `state/step_NNNNNN/`: weights as trained (with LoRA adapters unmerged), optimizer, scheduler, RNG
  states of every rank, step and data position, and the config fingerprint; `state/latest` names the
  newest one. DeepSpeed runs keep the engine's own (partitioned) checkpoint in `ds/`.

Every write goes to a temporary directory that is renamed into place when complete, so a process
killed mid-save leaves the previous checkpoint intact. A state written under a different config is
refused (the trajectory would silently diverge) with the list of keys that changed. A state written
from other *inputs* (the init checkpoint's weights, the training code, the data manifests) is stale:
the stage trains anew rather than resume it or, once finished, re-export its old weights.
"""
from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import logging
import os
import random
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from omni_core.config import Config

log = logging.getLogger(__name__)
STATE_FILE = "trainer_state.json"
# Keys that do not change what a stage computes: a resume may differ in them.
_IGNORED = {"stage": ("enabled", "save_every", "eval_every", "val_samples"),
            "data": ("num_workers", "on_bad_sample"), "model": ("attn_implementation",)}


_CODE = ("config.py", "processing.py", "model/**/*.py", "train/**/*.py", "data/**/*.py")


class CheckpointMismatchError(RuntimeError):
    """`resume: auto` found a state written under a different configuration."""


# ------------------------------------------------------------------------------------------ fingerprint
def fingerprint(cfg: Config, stage_name: str) -> dict[str, Any]:
    """The part of the config that determines a stage's trajectory (hashed into every state)."""
    d = cfg.to_dict()
    fp = {"stage": d["stages"][stage_name], "model": d["model"], "data": d["data"],
          "train": {k: d["train"][k] for k in ("seed", "lora_rank", "backend")}}
    if cfg.train.backend == "deepspeed":
        fp["train"]["deepspeed_config"] = d["train"]["deepspeed_config"]
    for section, keys in _IGNORED.items():
        fp[section] = {k: v for k, v in fp[section].items() if k not in keys}
    return fp


def _digest(files: list[Path], root: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(files):
        h.update(str(f.relative_to(root)).encode() + b"\0")
        with open(f, "rb") as fh:
            h.update(hashlib.file_digest(fh, "sha256").digest())
    return h.hexdigest()[:16]


def init_digest(cfg: Config, init: str | None) -> str | None:
    """Digest of the weight files of `checkpoints/<init>/model`; None without an init or before it is trained."""
    init_dir = Path(cfg.train.checkpoints_dir) / init / "model" if init else None
    return _digest(list(init_dir.glob("*.safetensors")), init_dir) if init_dir and init_dir.exists() else None


def stage_inputs(cfg: Config, stage_name: str) -> dict[str, str | None]:
    """Digests of what a stage's weights depend on besides its config: the init checkpoint's weight files,
    the package code that trains (model, train, data, processing, config) and the data manifests.

    DVC reruns a stage exactly when one of its dependencies changed; a state left from before (`persist`)
    must then not be resumed or, once finished, re-exported as if it were the new result."""
    from omni_core.train.stages import resolve_init

    pkg = Path(__file__).resolve().parents[1]
    data = Path(cfg.data.root)
    return {"init": init_digest(cfg, resolve_init(cfg, stage_name)),
            "code": _digest([f for pat in _CODE for f in pkg.glob(pat)], pkg),
            "data": _digest([f for f in (data / "train.jsonl", data / "val.jsonl") if f.exists()], data)}


def config_hash(fp: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(fp, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(d, dict):
        return {prefix: d}
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


def _diff(old: dict, new: dict) -> list[str]:
    a, b = _flatten(old), _flatten(new)
    return [f"{k}: {a.get(k, '<absent>')!r} -> {b.get(k, '<absent>')!r}"
            for k in sorted(set(a) | set(b)) if a.get(k, "<absent>") != b.get(k, "<absent>")]


# ---------------------------------------------------------------------------------------- atomic writes
@contextmanager
def atomic_dir(final: Path, rank: int = 0, barrier=lambda: None) -> Iterator[Path]:
    """Yield a temporary directory next to `final`; when the block ends without error it replaces
    `final` (the old one is moved aside first and deleted last, see `recover`).

    With several processes every rank writes into the same temporary directory: rank 0 creates it and
    renames it after all ranks passed `barrier`.
    """
    final = Path(final)
    tmp = final.parent / f".{final.name}.tmp"
    if rank == 0:
        recover(final)
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    barrier()
    yield tmp
    barrier()
    if rank == 0:
        old = final.parent / f".{final.name}.old"
        if final.exists():
            shutil.rmtree(old, ignore_errors=True)
            final.rename(old)
        tmp.rename(final)
        shutil.rmtree(old, ignore_errors=True)
    barrier()


def recover(final: Path) -> None:
    """Undo a swap that a kill interrupted between its two renames (`final` moved aside, not replaced)."""
    old = final.parent / f".{final.name}.old"
    if not final.exists() and old.exists():
        old.rename(final)


def write_text_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


# ------------------------------------------------------------------------------------------ RNG states
def rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ---------------------------------------------------------------------------------------- state (resume)
@dataclasses.dataclass
class TrainerState:
    """What besides weights and optimizer a resume needs: where the stage stands."""
    stage: str
    step: int                   # optimizer steps done
    samples_seen: int           # data position: samples consumed from the stage's sample stream
    config_hash: str
    world_size: int
    finished: bool = False
    fingerprint: dict = dataclasses.field(default_factory=dict)
    metrics: dict = dataclasses.field(default_factory=dict)
    inputs: dict = dataclasses.field(default_factory=dict)     # stage_inputs() when the state was written


def latest_state(stage_dir: Path) -> Path | None:
    """The newest complete state directory of a stage, or None."""
    pointer = Path(stage_dir) / "state" / "latest"
    if not pointer.exists():
        return None
    path = pointer.parent / pointer.read_text().strip()
    return path if (path / STATE_FILE).exists() else None


def read_state(state_dir: Path) -> TrainerState:
    return TrainerState(**json.loads((Path(state_dir) / STATE_FILE).read_text()))


def check_resumable(state_dir: Path, fp: dict[str, Any], world_size: int, deepspeed: bool,
                    inputs: dict[str, Any] | None = None) -> TrainerState | None:
    """Read a state to resume. An interrupted state written under another config (or world size, for
    DeepSpeed's partitioned optimizer) is refused: the message lists what changed and how to start
    over. A *finished* stage under another config is a new experiment (`dvc exp run -S ...`): None,
    the stage starts over. So is any state written from other `inputs` (`stage_inputs`: a retrained
    init checkpoint, changed code or data): it is stale, not a run to continue."""
    st = read_state(state_dir)
    stage_dir = Path(state_dir).parent.parent
    if inputs is not None and st.inputs != inputs:
        changed = [k for k in inputs if st.inputs.get(k) != inputs[k]] or ["(not recorded)"]
        log.warning("%s was trained from other inputs (changed: %s); training the stage anew", stage_dir,
                    ", ".join(changed))
        return None
    fix = (f"Either restore the old values, or start the stage over: delete {stage_dir / 'state'} "
           f"or pass --set train.resume=never.")
    if st.config_hash != config_hash(fp):
        changes = "\n  ".join(_diff(st.fingerprint, fp)) or "(fingerprint format changed)"
        if st.finished:
            log.warning("%s finished under another config (%s); training the stage anew", stage_dir,
                        changes.replace("\n  ", "; "))
            return None
        raise CheckpointMismatchError(
            f"{state_dir} was written by a different configuration of stage {st.stage!r}; resuming it "
            f"would not continue the same run. Changed since then:\n  {changes}\n{fix}")
    if deepspeed and st.world_size != world_size:
        raise CheckpointMismatchError(
            f"{state_dir} holds DeepSpeed states partitioned over {st.world_size} processes, this run has "
            f"{world_size}. Relaunch with {st.world_size} processes. {fix}")
    return st


def save_state(stage_dir: Path, state: TrainerState, *, model: nn.Module | None = None,
               optimizer: torch.optim.Optimizer | None = None, scheduler: Any = None, engine: Any = None,
               rank: int = 0, barrier=lambda: None, keep: int = 1) -> Path:
    """Write `state/step_NNNNNN/` atomically and point `state/latest` at it; keep the newest `keep`.

    Torch path: model weights (safetensors), optimizer, scheduler. DeepSpeed path: the engine's
    checkpoint (partitioned optimizer states, scheduler) written collectively by all ranks.
    Every rank stores its own RNG states.
    """
    root = Path(stage_dir) / "state"
    final = root / f"step_{state.step:06d}"
    with atomic_dir(final, rank, barrier) as tmp:
        if engine is not None:
            engine.save_checkpoint(str(tmp), tag="ds", save_latest=False)
        elif rank == 0:
            from safetensors.torch import save_model

            save_model(model, str(tmp / "model.safetensors"))
            torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
            torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
        torch.save(rng_state(), tmp / f"rng_{rank}.pt")
        if rank == 0:
            (tmp / STATE_FILE).write_text(json.dumps(dataclasses.asdict(state), indent=1))
    if rank == 0:
        write_text_atomic(root / "latest", final.name)
        for old in sorted(root.glob("step_*"))[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    barrier()
    return final


def load_state(state_dir: Path, *, model: nn.Module | None = None,
               optimizer: torch.optim.Optimizer | None = None, scheduler: Any = None, engine: Any = None,
               rank: int = 0) -> None:
    """Restore what `save_state` wrote into live objects (the config was checked by `check_resumable`)."""
    state_dir = Path(state_dir)
    if engine is not None:
        path, _ = engine.load_checkpoint(str(state_dir), tag="ds", load_optimizer_states=True,
                                         load_lr_scheduler_states=True)
        if path is None:
            raise RuntimeError(f"DeepSpeed could not load {state_dir / 'ds'}")
    else:
        from safetensors.torch import load_model

        load_model(model, str(state_dir / "model.safetensors"), strict=True)
        optimizer.load_state_dict(torch.load(state_dir / "optimizer.pt", weights_only=False))
        scheduler.load_state_dict(torch.load(state_dir / "scheduler.pt", weights_only=False))
    rng_file = state_dir / f"rng_{rank}.pt"
    if rng_file.exists():
        set_rng_state(torch.load(rng_file, weights_only=False))


# ---------------------------------------------------------------------------------------- HF export
def gathered_state_dict(engine: Any) -> dict[str, torch.Tensor] | None:
    """Full weights of a ZeRO-3 model on rank 0 (a collective: every rank must call it); None when the
    weights are not partitioned and the model's own state dict is complete."""
    if engine is None or engine.zero_optimization_stage() != 3:
        return None
    sd = engine._zero3_consolidated_16bit_state_dict()   # what HF Trainer and accelerate use
    if sd is not None:
        empty = [k for k, v in sd.items() if v.numel() == 0]
        if empty:
            raise RuntimeError(f"ZeRO-3 gather returned empty tensors for {empty[:5]}; refusing to save them")
    return sd


def export_model(model: nn.Module, processor: Any, out_dir: Path, *, engine: Any = None, rank: int = 0,
                 barrier=lambda: None, info: dict | None = None) -> Path:
    """`save_pretrained` model + processor into `out_dir` (atomically): ZeRO-3 weights gathered, LoRA
    adapters merged into a copy (the training model keeps them). `info` goes to `omni_train.json`."""
    from peft import PeftModel

    sd = gathered_state_dict(engine)
    out_dir = Path(out_dir)
    with atomic_dir(out_dir, rank, barrier) as tmp:
        if rank == 0:
            if isinstance(getattr(model, "llm", None), PeftModel):
                if sd is not None:
                    raise NotImplementedError("LoRA with ZeRO-3 is not supported: use configs/deepspeed/zero2.json")
                model = copy.deepcopy(model)
                model.llm = model.llm.merge_and_unload()
            model.save_pretrained(tmp, state_dict=sd, safe_serialization=True)
            if processor is not None:
                processor.save_pretrained(tmp)
            # no timestamp: an identical retrain must give an identical directory hash, or DVC reruns downstream
            (tmp / "omni_train.json").write_text(json.dumps(info or {}, indent=1))
    return out_dir
