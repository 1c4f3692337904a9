# Copyright 2026 The transformers-viq contributors. Licensed under the Apache License, Version 2.0.
"""Exponential moving average of trained weights (decoder fine-tuning, paper section 4.4)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn


class ExponentialMovingAverage:
    r"""
    Shadow copies of a model's trainable parameters, updated after every optimizer step as
    `shadow = decay * shadow + (1 - decay) * param`, in float32.

    Args:
        model (`nn.Module`): the model; the parameters that require a gradient at construction are followed.
        decay (`float`, *optional*, defaults to 0.9999): the decay per step.
        warmup (`bool`, *optional*, defaults to `True`): use `min(decay, (1 + n) / (10 + n))` at update `n`, so early
            averages are not dominated by the initial weights.
    """

    def __init__(self, model: nn.Module, decay: float = 0.9999, warmup: bool = True):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must be in (0, 1), got {decay}.")
        self.decay = decay
        self.warmup = warmup
        self.num_updates = 0
        self.names = [name for name, param in model.named_parameters() if param.requires_grad]
        if not self.names:
            raise ValueError("The model has no trainable parameters to average.")
        params = dict(model.named_parameters())
        self.shadow = {name: params[name].detach().float().clone() for name in self.names}

    def _params(self, model: nn.Module) -> dict[str, nn.Parameter]:
        params = dict(model.named_parameters())
        missing = [name for name in self.names if name not in params]
        if missing:
            raise ValueError(f"The model lacks averaged parameters: {missing[:5]}")
        return {name: params[name] for name in self.names}

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        decay = min(self.decay, (1 + self.num_updates) / (10 + self.num_updates)) if self.warmup else self.decay
        for name, param in self._params(model).items():
            shadow = self.shadow[name]
            if shadow.device != param.device:
                shadow = self.shadow[name] = shadow.to(param.device)
            shadow.lerp_(param.detach().float(), 1.0 - decay)
        self.num_updates += 1

    @torch.no_grad()
    def copy_to(self, model: nn.Module) -> None:
        """Overwrite the model's parameters with the averages."""
        for name, param in self._params(model).items():
            param.copy_(self.shadow[name].to(device=param.device, dtype=param.dtype))

    @contextlib.contextmanager
    def swapped(self, model: nn.Module) -> Iterator[nn.Module]:
        """The model with the averaged weights inside the block, its own weights restored after it."""
        params = self._params(model)
        saved = {name: param.detach().clone() for name, param in params.items()}
        self.copy_to(model)
        try:
            yield model
        finally:
            with torch.no_grad():
                for name, param in params.items():
                    param.copy_(saved[name])

    def state_dict(self) -> dict[str, torch.Tensor]:
        state = {f"shadow.{name}": tensor.detach().cpu().contiguous() for name, tensor in self.shadow.items()}
        state["num_updates"] = torch.tensor(self.num_updates, dtype=torch.int64)
        return state

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        names = {key.removeprefix("shadow.") for key in state if key.startswith("shadow.")}
        if names != set(self.names):
            raise ValueError(
                f"The EMA state follows other parameters: {sorted(names ^ set(self.names))[:5]} differ."
            )
        for name in self.names:
            device = self.shadow[name].device
            self.shadow[name] = state[f"shadow.{name}"].float().to(device)
        self.num_updates = int(state["num_updates"])


__all__ = ["ExponentialMovingAverage"]
