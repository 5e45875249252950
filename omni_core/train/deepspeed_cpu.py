"""Run DeepSpeed on a machine without a GPU, and without its JIT C++ builds.

DeepSpeed's CPU accelerator works (gloo, ZeRO 0-3, fp32), but two things make a CPU start slow or
impossible: the shared-memory all-reduce op and DeepSpeed's own
CPU optimizers are compiled on first use (24-90 s, and a compiler must be installed). Here we stub the
shm op (gloo does the collectives) and hand DeepSpeed a plain torch optimizer instead. Tests and CPU
runs then start in seconds. On a GPU machine nothing here is applied.

ZeRO-3 on GPUs partitions the weights while they load (`HfDeepSpeedConfig` alive while the model is built).
On CPU that path is off by default, and ``OMNI_CPU_ZERO3_INIT=1`` turns it on, so that a test can rehearse
the GPU path's loading on gloo processes (tests/test_full_rehearsal.py).
"""
from __future__ import annotations

import copy
import importlib
import os
import socket

import torch


def on_cpu() -> bool:
    """True when DeepSpeed has to run on its CPU accelerator (no CUDA device, or DS_ACCELERATOR=cpu)."""
    return os.environ.get("DS_ACCELERATOR") == "cpu" or not torch.cuda.is_available()


ZERO3_INIT_ENV = "OMNI_CPU_ZERO3_INIT"


def partitioned_load() -> bool:
    """Whether ZeRO-3 partitions the weights while they load: always on a GPU, on CPU only when
    ``OMNI_CPU_ZERO3_INIT=1`` (the tiny CPU runs keep their whole-weight load and its numbers)."""
    return not on_cpu() or os.environ.get(ZERO3_INIT_ENV) == "1"


def free_port() -> int:
    """A free TCP port on localhost (for MASTER_PORT of single-process and test runs)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ensure_dist_env() -> None:
    """Fill the rendezvous variables a plain `python -m ...` run lacks, so DeepSpeed can start one process.

    Under torchrun / the deepspeed launcher they are already set and left alone.
    """
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        return
    os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1")
    os.environ.setdefault("MASTER_PORT", str(free_port()))


def patch_deepspeed_for_cpu() -> None:
    """Select the CPU accelerator and stub the JIT-built shared-memory comm op (gloo is used instead).

    Must run before `deepspeed.initialize`; idempotent.
    """
    os.environ["DS_ACCELERATOR"] = "cpu"
    ds_torch = importlib.import_module("deepspeed.comm.torch")
    ds_torch.build_shm_op = lambda: None


def cpu_ds_config(ds_config: dict) -> dict:
    """Adapt a GPU DeepSpeed config to the CPU: no DeepSpeed optimizer (JIT build), no bf16/fp16 (fp32
    on these CPUs is ~400x faster than bf16), no offload (the states already live in CPU memory)."""
    out = copy.deepcopy(ds_config)
    out.pop("optimizer", None)
    out["zero_force_ds_cpu_optimizer"] = False
    out.setdefault("bf16", {})["enabled"] = False
    out.setdefault("fp16", {})["enabled"] = False
    zero = out.get("zero_optimization", {})
    zero.pop("offload_optimizer", None)
    zero.pop("offload_param", None)
    return out


def init_distributed() -> None:
    """Start the process group the way DeepSpeed wants it: gloo on CPU, the accelerator's backend on GPU."""
    import deepspeed

    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return
    deepspeed.init_distributed(dist_backend="gloo" if on_cpu() else None)
