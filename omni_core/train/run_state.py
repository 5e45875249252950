"""What a stage run leaves, and how a run picks it up again: the HF export (`model/`), the exact training
state for resume (`state/`), the dvclive log (`logs/<stage>/`), and `StageRun`, the bookkeeping every
training loop shares besides its optimizer steps (`loop.train_stage` for the recipe's stages,
`warmup.encoders.train_encoder` for the encoder warm-ups, stages 0_vision and 0_audio).

Layout of `checkpoints/<stage>/`:
- `model/`: `save_pretrained` of model + processor (ZeRO-3 weights gathered, LoRA merged): what the
  next stage, the evaluation and users load.
- `state/step_NNNNNN/`: weights as trained (with LoRA adapters unmerged), optimizer, scheduler, RNG
  states of every rank, step and data position, the config fingerprint, and `checksums.json` (size and
  sha256 of each of those files); `state/latest` names the newest one; the newest `train.keep_states`
  are kept. DeepSpeed runs keep the engine's own (partitioned) checkpoint in `ds/`.

Every write goes to a temporary directory that is renamed into place when complete, so a process
killed mid-save leaves the previous checkpoint intact. A state written under a different config is
refused (the trajectory would silently diverge) with the list of keys that changed. A state written
from other *inputs* (the init checkpoint's weights, the training code, the data manifests) is stale:
the stage trains anew rather than resume it or, once finished, re-export its old weights. A state whose
files no longer match their checksums (a full disk, a copy cut short, bit rot) is skipped with one log line
naming the file: the run resumes from the newest intact state, or starts over when none is left.
"""
from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import logging
import math
import os
import random
import shutil
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from omni_core.config import Config, StageConfig

log = logging.getLogger(__name__)
STATE_FILE = "trainer_state.json"
MANIFEST_FILE = "checksums.json"     # {"files": {relative path: {"bytes", "sha256"}}}
# Keys that do not change what a stage computes: a resume may differ in them.
_IGNORED = {"stage": ("enabled", "save_every", "eval_every", "val_samples"),
            "data": ("num_workers", "on_bad_sample"), "model": ("attn_implementation",)}


_CODE = ("config.py", "processing.py", "model/**/*.py", "train/**/*.py", "data/**/*.py")


class CheckpointMismatchError(RuntimeError):
    """`resume: auto` found a state written under a different configuration."""


class StateDamagedError(RuntimeError):
    """A state's files are missing, truncated, altered or unreadable."""


# ------------------------------------------------------------------------------------------ fingerprint
def fingerprint(cfg: Config, stage: StageConfig) -> dict[str, Any]:
    """The part of the config that determines a stage's trajectory (hashed into every state)."""
    d = cfg.to_dict()
    fp = {"stage": d["stages"][stage.name], "model": d["model"], "data": d["data"],
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


def stage_dir(cfg: Config, name: str) -> Path:
    """`checkpoints/<name>`: where stage `name` keeps its export and its states."""
    return Path(cfg.train.checkpoints_dir) / name


def init_digest(cfg: Config, init: str | None) -> str | None:
    """Digest of the weight files of `checkpoints/<init>/model`; None without an init or before it is trained."""
    init_dir = stage_dir(cfg, init) / "model" if init else None
    return _digest(list(init_dir.glob("*.safetensors")), init_dir) if init_dir and init_dir.exists() else None


def stage_inputs(cfg: Config, stage: StageConfig) -> dict[str, str | None]:
    """Digests of what a stage's weights depend on besides its config: the init checkpoint's weight files,
    the package code that trains (model, train, data, processing, config) and the data manifests.

    DVC reruns a stage exactly when one of its dependencies changed; a state left from before (`persist`)
    must then not be resumed or, once finished, re-exported as if it were the new result."""
    pkg = Path(__file__).resolve().parents[1]
    data = Path(cfg.data.root)
    inputs = {"init": init_digest(cfg, cfg.starts_from(stage)),
              "code": _digest([f for pat in _CODE for f in pkg.glob(pat)], pkg),
              "data": _digest([f for f in (data / "train.jsonl", data / "val.jsonl") if f.exists()], data)}
    if cfg.data.sources:     # users' own datasets (absent by default, so the prepared data's digests stay as they were)
        manifests = [Path(m).resolve() for src in cfg.data.sources for m in (src.train, src.val) if m]
        inputs["sources"] = _digest([m for m in manifests if m.exists()], Path("/"))
    return inputs


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


def _fix(state_dir: Path) -> str:
    return (f"Delete {state_dir} to resume from an older state, or start the stage over with "
            f"--set train.resume=never.")


def read_state(state_dir: Path) -> TrainerState:
    path = Path(state_dir) / STATE_FILE
    try:
        return TrainerState(**json.loads(path.read_text()))
    except (OSError, ValueError, TypeError) as e:
        raise StateDamagedError(f"{path} is unreadable ({type(e).__name__}: {e}). {_fix(path.parent)}") from e


def _sha256(path: Path) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def write_manifest(state_dir: Path) -> None:
    """Record size and sha256 of every file of `state_dir` in its `checksums.json` (before the state is
    renamed into place, so a state is never visible without one)."""
    state_dir = Path(state_dir)
    files = {str(f.relative_to(state_dir)): {"bytes": f.stat().st_size, "sha256": _sha256(f)}
             for f in sorted(state_dir.rglob("*")) if f.is_file() and f.name != MANIFEST_FILE}
    (state_dir / MANIFEST_FILE).write_text(json.dumps({"algorithm": "sha256", "files": files}, indent=1))


def _check_manifest(state_dir: Path) -> str | None:
    try:
        files = json.loads((state_dir / MANIFEST_FILE).read_text())["files"]
        expected = {rel: (int(f["bytes"]), str(f["sha256"])) for rel, f in files.items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        return f"{MANIFEST_FILE}: unreadable ({type(e).__name__}: {e})"
    if STATE_FILE not in expected:
        return f"{MANIFEST_FILE}: does not list {STATE_FILE}"
    for rel, (size, digest) in expected.items():
        f = state_dir / rel
        if not f.is_file():
            return f"{rel}: missing"
        if (got := f.stat().st_size) != size:
            return (f"{rel}: truncated ({got:,} of {size:,} bytes)" if got < size
                    else f"{rel}: {got:,} bytes, {size:,} were written")
        if (got_digest := _sha256(f)) != digest:
            return f"{rel}: sha256 {got_digest[:16]} does not match the recorded {digest[:16]}"
    return None


def _trial_read(state_dir: Path) -> str | None:
    """A state written before checksums existed: every file it needs is there and its container is whole
    (safetensors header vs file size, the CRC of every member of a torch zip). Unverified beyond that."""
    needed = [STATE_FILE] + ([] if (state_dir / "ds").is_dir() else ["model.safetensors", "optimizer.pt", "scheduler.pt"])
    for rel in needed:
        if not (state_dir / rel).is_file():
            return f"{rel}: missing"
    from safetensors import safe_open

    for f in sorted(state_dir.rglob("*")):
        rel = f.relative_to(state_dir)
        try:
            if f.suffix == ".safetensors":
                with safe_open(str(f), "pt"):
                    pass
            elif f.suffix == ".pt":
                with zipfile.ZipFile(f) as z:
                    if (bad := z.testzip()) is not None:
                        return f"{rel}: member {bad} fails its CRC check"
        except Exception as e:      # whatever a reader raises, the file cannot be loaded
            return f"{rel}: unreadable ({type(e).__name__}: {e})"
    return None


def verify_state(state_dir: Path) -> str | None:
    """What is wrong with a state directory, as "<file>: <problem>", or None when it is intact: checked
    against its `checksums.json`, or, for a state written before those existed, read trial-wise."""
    state_dir = Path(state_dir)
    problem = (_check_manifest(state_dir) if (state_dir / MANIFEST_FILE).exists() else _trial_read(state_dir))
    if problem is None:
        try:
            read_state(state_dir)
        except StateDamagedError as e:
            problem = f"{STATE_FILE}: unreadable ({e.__cause__})"
    return " ".join(problem.split()) if problem else None      # one log line, whatever a reader's message holds


def state_dirs(out_dir: Path) -> list[Path]:
    """A stage's state directories, newest (highest step) first."""
    root = Path(out_dir) / "state"
    found = [p for p in root.glob("step_*") if p.is_dir() and p.name[5:].isdigit()]
    return sorted(found, key=lambda p: int(p.name[5:]), reverse=True)


def find_state(out_dir: Path, report: bool = True) -> tuple[Path | None, list[Path]]:
    """The newest intact state of a stage (or None) and the damaged ones newer than it; each damaged one is
    logged in one line (`report`) naming the file and what is wrong with it."""
    damaged: list[Path] = []
    candidates = state_dirs(out_dir)
    for i, d in enumerate(candidates):
        problem = verify_state(d)
        if problem is None:
            return d, damaged
        if report:
            log.warning("state %s is damaged (%s); %s", d, problem,
                        "trying the next older state" if i + 1 < len(candidates) else "no older state is left")
        damaged.append(d)
    return None, damaged


def latest_state(out_dir: Path) -> Path | None:
    """The newest intact state directory of a stage, or None (damaged ones are logged and skipped)."""
    return find_state(out_dir)[0]


def check_resumable(state_dir: Path, fp: dict[str, Any], world_size: int, deepspeed: bool,
                    inputs: dict[str, Any] | None = None) -> TrainerState | None:
    """Read a state to resume. An interrupted state written under another config (or world size, for
    DeepSpeed's partitioned optimizer) is refused: the message lists what changed and how to start
    over. A *finished* stage under another config is a new experiment (`dvc exp run -S ...`): None,
    the stage starts over. So is any state written from other `inputs` (`stage_inputs`: a retrained
    init checkpoint, changed code or data): it is stale, not a run to continue."""
    st = read_state(state_dir)
    out_dir = Path(state_dir).parent.parent
    if inputs is not None and st.inputs != inputs:
        changed = [k for k in inputs if st.inputs.get(k) != inputs[k]] or ["(not recorded)"]
        log.warning("%s was trained from other inputs (changed: %s); training the stage anew", out_dir,
                    ", ".join(changed))
        return None
    fix = (f"Either restore the old values, or start the stage over: delete {out_dir / 'state'} "
           f"or pass --set train.resume=never.")
    if st.config_hash != config_hash(fp):
        changes = "\n  ".join(_diff(st.fingerprint, fp)) or "(fingerprint format changed)"
        if st.finished:
            log.warning("%s finished under another config (%s); training the stage anew", out_dir,
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


def save_state(out_dir: Path, state: TrainerState, *, model: nn.Module | None = None,
               optimizer: torch.optim.Optimizer | None = None, scheduler: Any = None, engine: Any = None,
               rank: int = 0, barrier=lambda: None, keep: int = 2) -> Path:
    """Write `state/step_NNNNNN/` atomically and point `state/latest` at it; keep the newest `keep`.

    Torch path: model weights (safetensors), optimizer, scheduler. DeepSpeed path: the engine's
    checkpoint (partitioned optimizer states, scheduler) written collectively by all ranks.
    Every rank stores its own RNG states; rank 0 then checksums all files (`checksums.json`).
    """
    root = Path(out_dir) / "state"
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
        barrier()                 # every rank's files are written before rank 0 checksums them
        if rank == 0:
            write_manifest(tmp)
    if rank == 0:
        write_text_atomic(root / "latest", final.name)
        for old in [d for d in state_dirs(out_dir) if d != final][max(keep, 1) - 1:]:
            shutil.rmtree(old, ignore_errors=True)
    barrier()
    return final


def load_state(state_dir: Path, *, model: nn.Module | None = None,
               optimizer: torch.optim.Optimizer | None = None, scheduler: Any = None, engine: Any = None,
               rank: int = 0, verify: bool = True) -> None:
    """Restore what `save_state` wrote into live objects (the config was checked by `check_resumable`).

    With `verify` the files are checked first (`verify_state`); a damaged file raises `StateDamagedError`
    naming it, before any object is changed (the torch path reads every file before applying one)."""
    state_dir = Path(state_dir)
    if verify and (problem := verify_state(state_dir)) is not None:
        raise StateDamagedError(f"{state_dir} is damaged: {problem}. {_fix(state_dir)}")

    def unreadable(name: str, e: Exception) -> StateDamagedError:
        return StateDamagedError(f"{state_dir / name} is unreadable ({type(e).__name__}: {e}). {_fix(state_dir)}")

    def read(name: str) -> Any:
        try:
            return torch.load(state_dir / name, weights_only=False)
        except Exception as e:      # whatever unpickling raises, the file cannot be loaded
            raise unreadable(name, e) from e

    rng = read(f"rng_{rank}.pt") if (state_dir / f"rng_{rank}.pt").exists() else None
    if engine is not None:
        path, _ = engine.load_checkpoint(str(state_dir), tag="ds", load_optimizer_states=True,
                                         load_lr_scheduler_states=True)
        if path is None:
            raise RuntimeError(f"DeepSpeed could not load {state_dir / 'ds'}")
    else:
        from safetensors import SafetensorError
        from safetensors.torch import load_model

        optim, sched = read("optimizer.pt"), read("scheduler.pt")
        try:          # reads the whole file before it changes a weight; a key mismatch is not damage
            load_model(model, str(state_dir / "model.safetensors"), strict=True)
        except (SafetensorError, OSError) as e:
            raise unreadable("model.safetensors", e) from e
        optimizer.load_state_dict(optim)
        scheduler.load_state_dict(sched)
    if rng is not None:
        set_rng_state(rng)


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


# -------------------------------------------------------------------------------------- a stage's run
def truncate_logs(metrics_dir: Path, step: int) -> None:
    """Drop dvclive rows logged after `step` by a run that died before its next checkpoint (the resumed
    run logs those steps again)."""
    for tsv in metrics_dir.rglob("*.tsv"):
        header, *rows = tsv.read_text().splitlines()
        col = header.split("\t").index("step")
        tsv.write_text("\n".join([header] + [r for r in rows if int(r.split("\t")[col]) <= step]) + "\n")


SKIPPED_FILE = "skipped.json"


def skip_stage(cfg: Config, stage: StageConfig) -> dict[str, Any]:
    """Stand in for a stage the profile disables: its outs are a record, not a model.

    `checkpoints/<name>/model/skipped.json` names the checkpoint the next stage starts from instead
    (`Config.starts_from`) with the digest of its weights, so DVC reruns the stages below when those change;
    `state/` exists empty and `logs/<name>` loses any dvclive log of an earlier, enabled run (figures and
    `dvc plots` would show it as this profile's)."""
    out = stage_dir(cfg, stage.name)
    init = cfg.starts_from(stage)
    record = {"stage": stage.name, "profile": cfg.profile, "skipped": True,
              "next_stage_starts_from": init or "a fresh model built from the config",
              "init_weights_digest": init_digest(cfg, init)}
    with atomic_dir(out / "model") as tmp:
        (tmp / SKIPPED_FILE).write_text(json.dumps(record, indent=1) + "\n")
    shutil.rmtree(out / "state", ignore_errors=True)
    (out / "state").mkdir(parents=True)
    logs = Path(cfg.train.log_dir) / stage.name
    shutil.rmtree(logs / "plots", ignore_errors=True)
    for f in ("metrics.json", "params.yaml"):
        (logs / f).unlink(missing_ok=True)
    return record


class StageRun:
    """One run of `stage`: finds a state to resume (or removes a stale one), logs with dvclive on the
    main rank, and saves states and the export. `summary` collects the stage's metrics; its floats are
    stored in every state, so a resumed run reports the `val_loss_start` of the run it continues."""

    def __init__(self, cfg: Config, stage: StageConfig, *, world_size: int = 1, deepspeed: bool = False,
                 main: bool = True, rank: int = 0, barrier: Callable[[], None] = lambda: None):
        self.cfg, self.stage, self.name = cfg, stage, stage.name
        self.main, self.rank, self.barrier = main, rank, barrier
        self.world_size = world_size
        self.out_dir = stage_dir(cfg, stage.name)
        self.fp, self.inputs = fingerprint(cfg, stage), stage_inputs(cfg, stage)
        # every rank verifies alike (the same files), so all agree on the state without a broadcast
        self.state_dir, damaged = (find_state(self.out_dir, report=main) if cfg.train.resume == "auto"
                                   else (None, []))
        self.state = (check_resumable(self.state_dir, self.fp, world_size, deepspeed, self.inputs)
                      if self.state_dir else None)
        if damaged and self.state_dir is None and main:
            log.warning("no intact state of stage %s is left in %s (%d damaged); training it from the start",
                        self.name, self.out_dir / "state", len(damaged))
        barrier()                                          # no rank still reads what main removes below
        if main and self.state is None and (self.out_dir / "state").exists():
            shutil.rmtree(self.out_dir / "state")          # a state of another run must not mix with this one
        elif main and damaged:             # resuming an older state: the damaged newer ones are retrained
            for d in damaged:
                shutil.rmtree(d, ignore_errors=True)
            write_text_atomic(self.out_dir / "state" / "latest", self.state_dir.name)
        barrier()
        self.summary: dict[str, Any] = {"stage": stage.name}
        if self.state is not None:
            self.summary.update(self.state.metrics)
        self.live = None

    @property
    def start_step(self) -> int:
        return self.state.step if self.state is not None else 0

    @property
    def trains_anew(self) -> bool:
        """False when the state found is a finished run of the same inputs: nothing is left to train."""
        return self.state is None or not self.state.finished

    def load(self, **objects: Any) -> None:
        """Restore the state's weights, optimizer, scheduler (and engine) into `objects` (`load_state`)."""
        load_state(self.state_dir, rank=self.rank, verify=False, **objects)     # verified when found

    def open_log(self, params: dict[str, Any]) -> None:
        if not self.main:
            return
        from dvclive import Live

        self.live = Live(dir=str(Path(self.cfg.train.log_dir) / self.name), resume=self.state is not None,
                         save_dvc_exp=False, dvcyaml=None)
        if self.state is not None:
            truncate_logs(Path(self.live.plots_dir) / "metrics", self.state.step)
        self.live.log_params({"stage": self.name, **params})

    def log(self, step: int, metrics: dict[str, float | None]) -> None:
        if self.live is None:
            return
        self.live.step = step
        for k, v in metrics.items():
            if v is not None and math.isfinite(v):
                self.live.log_metric(k, v)

    def save(self, step: int, samples_seen: int, finished: bool, *, state_model: nn.Module, optimizer: Any,
             scheduler: Any, final_model: nn.Module, processor: Any, engine: Any = None) -> None:
        """Write the resumable state of `state_model` (+ optimizer, scheduler); once `finished`, also export
        `final_model`. The periodic states alone can resume a run, so the HF copy is written once: it cost
        ~0.2 s per save at tiny scale, and a ZeRO-3 gather plus a second full write at 7B."""
        info = {"stage": self.name, "step": step, "config_hash": config_hash(self.fp), "finished": finished}
        st = TrainerState(stage=self.name, step=step, samples_seen=samples_seen, config_hash=info["config_hash"],
                          world_size=self.world_size, finished=finished, fingerprint=self.fp, inputs=self.inputs,
                          metrics={k: v for k, v in self.summary.items() if isinstance(v, float)})
        save_state(self.out_dir, st, model=state_model, optimizer=optimizer, scheduler=scheduler, engine=engine,
                   rank=self.rank, barrier=self.barrier, keep=self.cfg.train.keep_states)
        if finished:
            export_model(final_model, processor, self.out_dir / "model", engine=engine, rank=self.rank,
                         barrier=self.barrier, info=info)

    def end_step(self, step: int, metrics: dict[str, float], save: Callable[[bool], None],
                 on_step: Callable[[int, dict], None] | None) -> None:
        """After optimizer step `step`: a resumable state every `save_every` steps (the last step's is the
        final save), then the caller's `on_step` hook."""
        if step % self.stage.save_every == 0 and step < self.stage.steps:
            save(False)
        if on_step is not None:
            on_step(step, metrics)

    def needs_final_save(self) -> bool:
        return self.trains_anew or not (self.out_dir / "model" / "config.json").exists()

    def close(self, summary_keys: tuple[str, ...]) -> None:
        """Write the float entries of `summary` named in `summary_keys` to dvclive's summary and end it."""
        if self.live is None:
            return
        for k in summary_keys:
            if isinstance(self.summary.get(k), float):
                self.live.summary[k] = self.summary[k]
        self.live.end()
