"""What an encoder warm-up objective hands the loop of `encoders.train_encoder`: the module that trains
(encoder + head), its loss at each step, and its held-out metrics. `vision_encoder.py` and
`audio_encoder.py` each build one."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn


@dataclass
class EncoderObjective:
    """One encoder warm-up objective, built around the model's encoder (`stages.<name>.objective`)."""
    module: nn.Module                                   # encoder + head: what trains and what a state restores
    loss: Callable[[int], torch.Tensor]                 # the loss of optimizer step s: a pure function of s
    validate: Callable[[], dict[str, float]]            # held-out metrics, keys as dvclive logs them ("val/...")
    headline: str                                       # the metric the log line reports, e.g. "val/accuracy"
    chance: float                                       # that metric's chance level
    facts: dict[str, Any] = field(default_factory=dict)   # for the summary (train / val sizes, vocabulary, ...)
