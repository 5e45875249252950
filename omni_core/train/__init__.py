"""Training: the two-phase recipe of Baichuan-Omni as stages of params.yaml, on one loop.

Where things live:
- `loop.py`: `train_stage(cfg, name)`, the loop of every language-model stage (plain PyTorch, or
  DeepSpeed ZeRO-2/3 when `train.backend = deepspeed`), and its two back ends.
- `warmup/`: what trains a module alone on an objective of its own: the encoders' warm-ups (stages
  0_vision and 0_audio, stand-ins for a pretrained SigLIP and Whisper) and the audio projector's CTC warm-up.
- `freezing.py` (which modules train at which lr), `schedule.py` (warm-up + cosine, the optimizer step),
  `model_init.py` (the checkpoint or fresh model a stage starts from), `batches.py` (a stage's data
  stream), `loss_filter.py` (the paper's SFT data filter).
- `run_state.py`: what a stage run leaves (export, resumable states, dvclive log) and how it resumes.
- `process.py`, `deepspeed_cpu.py`: the process a stage runs in; DeepSpeed on a machine without a GPU.
- `launch.py`, `__main__.py`: running a stage from a notebook, torchrun, the deepspeed launcher or the CLI.

Names are imported on first use, so `import omni_core.train` stays light.
"""
import importlib

_EXPORTS = {"train_stage": "loop", "build_command": "launch", "run": "launch", "write_hostfile": "launch",
            "CheckpointMismatchError": "run_state", "param_groups": "freezing", "stage_lrs": "freezing",
            "lr_factor": "schedule", "init_model": "model_init"}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"omni_core.train.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'omni_core.train' has no attribute {name!r}")
