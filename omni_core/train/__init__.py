"""Training: the two-phase recipe of Baichuan-Omni as stages of params.yaml, on one loop.

`train_stage(cfg, name)` trains one stage (plain PyTorch, or DeepSpeed ZeRO-2/3 when
`train.backend = deepspeed`), resuming it when `checkpoints/<name>/state` holds a compatible state.
`build_command(...)` + `run(...)` launch it as a subprocess (torchrun / deepspeed) from a notebook.
Names are imported on first use, so `import omni_core.train.stages` stays light.
"""
import importlib

_EXPORTS = {"train_stage": "loop", "build_command": "launch", "run": "launch", "write_hostfile": "launch",
            "CheckpointMismatchError": "checkpoint", "param_groups": "stages", "stage_lrs": "stages",
            "lr_factor": "stages", "init_model": "stages"}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"omni_core.train.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'omni_core.train' has no attribute {name!r}")
