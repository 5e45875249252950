"""The training loop: one loop for every stage, on plain PyTorch (one process, CPU or GPU) or on the
DeepSpeed engine (ZeRO-2/3, bf16, CPU offload; one or many processes and nodes).

    from omni_core import load_config
    from omni_core.train import train_stage
    train_stage(load_config(), "1a_image_caption")

What differs between the two back ends is four lines (forward, backward, step, grad norm): everything
else -- data stream, schedule, evaluation, logging, checkpoints, resume -- is shared. Optimizer steps
are counted in `step`; `batch_size` samples (all processes together) make one step, split into
`grad_accum` micro-batches per process.
"""
from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch

from omni_core.config import Config, ConfigError, StageConfig
from omni_core.train import deepspeed_cpu
from omni_core.train.batches import StageBatches
from omni_core.train.freezing import count_params, param_groups
from omni_core.train.model_init import init_model
from omni_core.train.process import Dist, prepare_process, setup_dist
from omni_core.train.run_state import StageRun, skip_stage
from omni_core.train.schedule import build_scheduler, clip_and_step

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------- DeepSpeed
def deepspeed_config(cfg: Config, stage: StageConfig, dist: Dist) -> dict:
    """Load `train.deepspeed_config` and fill its "auto" values from the stage (batch split, clipping,
    bf16 from `model.dtype`); on CPU drop what needs a GPU or a JIT build (deepspeed_cpu)."""
    path = Path(cfg.train.deepspeed_config)
    if not path.exists():
        raise ConfigError(f"train.deepspeed_config = {str(path)!r} does not exist; use one of "
                          f"configs/deepspeed/{{zero2,zero3,zero3_offload}}.json")
    raw = json.loads(path.read_text())
    micro = micro_batch_size(stage, dist.world_size)
    fill = {"train_batch_size": micro * stage.grad_accum * dist.world_size,
            "train_micro_batch_size_per_gpu": micro, "gradient_accumulation_steps": stage.grad_accum,
            "gradient_clipping": stage.max_grad_norm, "lr": max(stage.lr.values(), default=0.0),
            "weight_decay": stage.weight_decay, "enabled": cfg.model.dtype == "bfloat16"}

    def resolve(node: Any, key: str = "") -> Any:
        if isinstance(node, dict):
            return {k: resolve(v, k) for k, v in node.items()}
        if node == "auto":
            if key not in fill:
                raise ConfigError(f"{path}: {key!r} = 'auto' has no value to take from params.yaml; set it")
            return fill[key]
        return node

    ds = resolve(raw)
    return deepspeed_cpu.cpu_ds_config(ds) if deepspeed_cpu.on_cpu() else ds


def micro_batch_size(stage: StageConfig, world_size: int) -> int:
    per = stage.grad_accum * world_size
    if stage.batch_size % per:
        raise ConfigError(f"batch_size {stage.batch_size} is not divisible by grad_accum x processes = "
                          f"{stage.grad_accum} x {world_size}; change the stage's batch_size or grad_accum")
    return stage.batch_size // per


# --------------------------------------------------------------------------------------------- loop
def use_autocast(cfg: Config, dist: Dist) -> bool:
    """Whether training steps run under bf16 autocast (DeepSpeed handles its own precision): a CUDA run with
    ``model.dtype`` bfloat16, or ``train.mixed_precision`` bf16 on a device that has bf16 matmuls."""
    if dist.deepspeed:
        return False
    if cfg.train.mixed_precision == "bf16":
        if dist.device.type == "cpu" and not torch.ops.mkldnn._is_mkldnn_bf16_supported():
            raise ConfigError("train.mixed_precision = bf16, but this CPU has no native bf16 matmuls (avx512_bf16 or "
                              "AMX): they would be emulated, many times slower than fp32; set train.mixed_precision: none")
        return True
    return dist.device.type == "cuda" and cfg.model.dtype == "bfloat16"


class _Backend:
    """Forward/backward/step on either plain torch or a DeepSpeed engine (the only place they differ)."""

    def __init__(self, cfg: Config, stage: StageConfig, model, groups, dist: Dist):
        self.dist, self.stage, self.engine = dist, stage, None
        self.autocast = (torch.autocast(dist.device.type, dtype=torch.bfloat16) if use_autocast(cfg, dist)
                         else nullcontext())
        if dist.deepspeed:
            import deepspeed

            ds_config = deepspeed_config(cfg, stage, dist)
            client_opt = None if "optimizer" in ds_config else torch.optim.AdamW(groups, lr=groups[0]["lr"])
            self.engine, self.optimizer, _, self.scheduler = deepspeed.initialize(
                model=model, optimizer=client_opt, model_parameters=groups if client_opt is None else None,
                lr_scheduler=lambda opt: build_scheduler(opt, stage), config=ds_config)
            self.model = self.engine.module
        else:
            self.model = model.to(dist.device)
            fused = dist.device.type == "cuda"
            self.optimizer = torch.optim.AdamW(groups, lr=groups[0]["lr"], fused=fused)
            self.scheduler = build_scheduler(self.optimizer, stage)
        self.params = [p for g in groups for p in g["params"]]

    def forward(self, batch: dict, loss_weighting: str = "token") -> torch.Tensor:
        with self.autocast:
            out = (self.engine or self.model)(**batch, loss_weighting=loss_weighting)
        return out.loss

    def backward(self, loss: torch.Tensor) -> None:
        if self.engine is not None:
            self.engine.backward(loss)
        else:
            (loss / self.stage.grad_accum).backward()

    def step(self) -> float:
        """Optimizer + scheduler step after the last micro-batch; returns the pre-clip grad norm."""
        if self.engine is not None:
            self.engine.step()
            norm = self.engine.get_global_grad_norm()
            return float(norm) if norm is not None else float("nan")
        return clip_and_step(self.params, self.optimizer, self.scheduler, self.stage.max_grad_norm)

    def micro_step(self) -> None:
        """DeepSpeed counts micro-batches itself (it steps only at the accumulation boundary)."""
        if self.engine is not None:
            self.engine.step()

    def train(self, mode: bool = True) -> None:
        (self.engine or self.model).train(mode)

    def lrs(self) -> dict[str, float]:
        return {g.get("name", str(i)): g["lr"] for i, g in enumerate(self.optimizer.param_groups)}


def _to(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}


def evaluate_loss(backend: _Backend, batches: list[dict], dist: Dist) -> float:
    """Validation loss: mean cross-entropy over all supervised tokens of the val batches (all ranks).

    With several DeepSpeed processes the forward stays in training mode with autograd on (the graph is
    dropped): only then does the model run absent modalities on a dummy input, which keeps every rank's
    ZeRO-3 parameter gathers in step. The model has no dropout, so the loss is the same.
    """
    lockstep = dist.deepspeed and dist.world_size > 1
    backend.train(lockstep)
    total, n = 0.0, 0.0
    with torch.enable_grad() if lockstep else torch.no_grad():
        for batch in batches:
            inputs = {k: v for k, v in batch.items() if not k.startswith("_")}
            loss = backend.forward(_to(inputs, dist.device))
            total += float(loss.detach()) * batch["_supervised"]
            n += batch["_supervised"]
    backend.train(True)
    total, n = dist.sum([total, n])
    return total / max(n, 1.0)


def train_stage(cfg: Config, name: str, *, on_step: Callable[[int, dict], None] | None = None,
                progress: bool = True) -> dict[str, Any]:
    """Train stage `name` of `cfg` from its `init_from` checkpoint (or resume it), write checkpoints,
    dvclive logs and the final HF export; returns the stage's summary metrics.

    `on_step(step, metrics)` is called after every optimizer step (tests use it to simulate a kill).
    """
    stage = cfg.stage(name)        # resolved once; everything below receives the StageConfig
    if not stage.enabled:
        log.info("stage %s is disabled in profile %s; skipping", name, cfg.profile)
        # under a launcher every rank gets here; one writes the record
        return skip_stage(cfg, stage) if int(os.environ.get("RANK", "0")) == 0 else {"stage": name, "skipped": True}
    if stage.objective != "lm":     # an encoder's warm-up (stand-in for a pretrained encoder): its own loop
        from omni_core.train.warmup.encoders import train_encoder

        return train_encoder(cfg, stage, on_step=on_step, progress=progress)
    prepare_process(cfg)
    dist = setup_dist(cfg)
    run = StageRun(cfg, stage, world_size=dist.world_size, deepspeed=dist.deepspeed, main=dist.main,
                   rank=dist.rank, barrier=dist.barrier)
    torch.manual_seed(cfg.train.seed)          # the same fresh weights on every rank (ZeRO-3 partitions them)

    ds_keep = None   # must stay referenced: transformers finds it through a weakref while loading
    if (dist.deepspeed and deepspeed_cpu.partitioned_load()
            and deepspeed_config(cfg, stage, dist)["zero_optimization"].get("stage") == 3):
        from transformers.integrations import HfDeepSpeedConfig  # from_pretrained partitions while loading

        ds_keep = HfDeepSpeedConfig(deepspeed_config(cfg, stage, dist))
    model, processor = init_model(cfg, stage, dtype=torch.float32)
    if cfg.train.lora_rank > 0 and dist.deepspeed and ds_keep is not None:
        raise ConfigError("train.lora_rank > 0 is not supported with ZeRO-3; use configs/deepspeed/zero2.json")
    if stage.audio_projector_ctc_steps and ds_keep is not None:
        raise ConfigError(f"stages.{name}.audio_projector_ctc_steps needs whole weights, not ZeRO-3 partitions; "
                          "use configs/deepspeed/zero2.json or set it to 0")
    if cfg.train.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    ctc_warmup = {}
    if stage.audio_projector_ctc_steps and run.state is None:     # before the optimizer copies any weight
        from omni_core.train.warmup.audio_projector import warm_up_audio_projector

        ctc_warmup = warm_up_audio_projector(cfg, stage, model.to(dist.device), processor.tokenizer, dist.device)
    torch.manual_seed(cfg.train.seed + dist.rank)
    groups = param_groups(model, stage)
    counts = count_params(model)
    backend = _Backend(cfg, stage, model, groups, dist)
    data = StageBatches(cfg, stage, processor, dist.rank, dist.world_size, micro_batch_size(stage, dist.world_size))
    loss_filter = None
    if stage.loss_filter_k > 0:   # before a resume loads the state: it scores with the stage's starting weights
        from omni_core.train.loss_filter import filter_stage_data

        loss_filter = filter_stage_data(cfg, stage, data, backend.engine or backend.model, dist.device,
                                        resumed=run.state is not None, main=dist.main, barrier=dist.barrier,
                                        autocast=backend.autocast, progress=progress)

    step, samples_seen = 0, 0
    if run.state is not None:
        run.load(model=backend.model, optimizer=backend.optimizer, scheduler=backend.scheduler, engine=backend.engine)
        step, samples_seen = run.state.step, run.state.samples_seen
        log.info("resuming %s from %s (step %d)", name, run.state_dir, step)
    run.open_log({"trainable": {k: v["trainable"] for k, v in counts.items()}})
    summary = run.summary
    summary.update(rank=dist.rank, params=counts, world_size=dist.world_size, backend=cfg.train.backend, **ctc_warmup)
    if loss_filter is not None:
        summary["loss_filter"] = {k: loss_filter.get(k) for k in ("k", "before", "after")}

    val = data.val_batches()
    if step == 0 and val:
        summary["val_loss_start"] = evaluate_loss(backend, val, dist)
        run.log(0, {"val/loss": summary["val_loss_start"]})

    def save(finished: bool) -> None:
        run.save(step, samples_seen, finished, state_model=backend.model, optimizer=backend.optimizer,
                 scheduler=backend.scheduler, final_model=backend.model, processor=processor, engine=backend.engine)

    # ---- the loop
    from tqdm.auto import tqdm

    bar = tqdm(total=stage.steps, initial=step, desc=name, disable=not (progress and dist.main),
               dynamic_ncols=True, smoothing=0.1)
    batches = data.train_batches(start_step=step)
    backend.train(True)
    t_start, tok_total, sup_total = time.perf_counter(), 0.0, 0.0
    while step < stage.steps:
        t0 = time.perf_counter()
        losses, tokens, sup = [], 0.0, 0.0
        for micro in range(stage.grad_accum):
            batch = next(batches)
            tokens += batch.pop("_tokens")
            sup += batch.pop("_supervised")
            loss = backend.forward(_to(batch, dist.device), stage.loss_weighting)
            backend.backward(loss)
            losses.append(float(loss.detach()))
            if micro < stage.grad_accum - 1:
                backend.micro_step()
        lr = backend.lrs()
        grad_norm = backend.step()
        step += 1
        samples_seen += data.samples_per_step
        loss_v, tokens, sup = dist.sum([sum(losses) / len(losses), tokens, sup])
        loss_v /= dist.world_size
        dt = time.perf_counter() - t0
        tok_total, sup_total = tok_total + tokens, sup_total + sup
        metrics = {"train/loss": loss_v, "train/lr": next(iter(lr.values())), "train/grad_norm": grad_norm,
                   "train/tokens_per_s": tokens / dt, "train/supervised_tokens_per_s": sup / dt}
        summary["train_loss"] = loss_v
        if step % stage.eval_every == 0 and step < stage.steps and val:
            metrics["val/loss"] = evaluate_loss(backend, val, dist)
        run.log(step, metrics)
        bar.set_postfix(loss=f"{loss_v:.3f}", lr=f"{metrics['train/lr']:.1e}", tok_s=f"{tokens / dt:,.0f}")
        bar.update(1)
        run.end_step(step, metrics, save, on_step)
    bar.close()
    wall = time.perf_counter() - t_start

    if val and run.trains_anew:
        summary["val_loss_end"] = evaluate_loss(backend, val, dist)
        run.log(step, {"val/loss": summary["val_loss_end"]})
    summary.update(steps=step, wall_s=wall)
    if tok_total:         # a rerun of a finished stage trains nothing and keeps the throughput it measured
        summary.update(tokens_per_s=tok_total / max(wall, 1e-9), supervised_tokens_per_s=sup_total / max(wall, 1e-9))
    if run.needs_final_save():
        save(finished=True)
    run.close(("val_loss_start", "val_loss_end", "train_loss", "tokens_per_s", "supervised_tokens_per_s", "wall_s"))
    summary["model"] = backend.model
    return summary
