"""Where a training process sits: its rank, device and collectives (`Dist`), set up once per process
for either back end, plus the per-process settings every training loop applies first."""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from omni_core.config import Config, ConfigError
from omni_core.train import deepspeed_cpu


def prepare_process(cfg: Config) -> None:
    """Per-process settings of a training run: CPU threads, and no per-file load/save bars from transformers
    (they would bury the training bar)."""
    from transformers.utils import logging as hf_logging

    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    hf_logging.disable_progress_bar()


@dataclass
class Dist:
    """Where this process sits: rank, world size, device, and the collectives the loop needs."""
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    deepspeed: bool = False

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world_size > 1:
            torch.distributed.barrier()

    def sum(self, values: list[float]) -> list[float]:
        """All-reduce (sum) a few scalars across processes."""
        if self.world_size == 1:
            return values
        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        torch.distributed.all_reduce(t)
        return t.tolist()


def setup_dist(cfg: Config) -> Dist:
    """Start the process group (DeepSpeed back end) or check that the torch back end runs alone."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if cfg.train.backend == "torch":
        if world > 1:
            raise ConfigError(f"train.backend = 'torch' runs a single process but WORLD_SIZE={world}; for several "
                              f"processes set --set train.backend=deepspeed (ZeRO-2/3 in configs/deepspeed/)")
        dev = torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
        return Dist(device=dev)
    if deepspeed_cpu.on_cpu():
        deepspeed_cpu.patch_deepspeed_for_cpu()
    deepspeed_cpu.ensure_dist_env()
    deepspeed_cpu.init_distributed()
    rank, world = torch.distributed.get_rank(), torch.distributed.get_world_size()
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if deepspeed_cpu.on_cpu():
        dev = torch.device("cpu")
    else:
        torch.cuda.set_device(local)
        dev = torch.device("cuda", local)
    return Dist(rank, world, local, dev, deepspeed=True)
