# Copyright 2026 The transformers-viq contributors. Licensed under the Apache License, Version 2.0.
"""Progressive resolution for ViQ training: a pixel-budget schedule over the run (paper section 3.1, appendix A.1).

Stage 1 starts with images at their native aspect ratio within a small pixel budget (384^2, vision tokens downsampled
x16 before the LLM) and raises the budget (768^2, x4) as training goes; later stages train at a fixed budget. A
[`ResolutionSchedule`] maps training progress to a phase: the pixel budget of the images and the side of the square
window each LLM token pools (4: x16, 2: x4). The progress lives in shared memory, so data-loader workers read the
value the trainer's callback writes.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class ResolutionPhase:
    """Up to `until` (a fraction of the run, in `(0, 1]`), images get at most `max_pixels` pixels and each LLM token
    pools a `token_window x token_window` window of patches."""

    until: float
    max_pixels: int
    token_window: int = 2


class ResolutionSchedule:
    r"""
    Phases of a run, in order of `until`; the last one must reach 1.0.

    Args:
        phases (`list[ResolutionPhase | dict]`): e.g. `[{"until": 0.5, "max_pixels": 147456, "token_window": 4},
            {"until": 1.0, "max_pixels": 589824, "token_window": 2}]`.
    """

    def __init__(self, phases):
        phases = [p if isinstance(p, ResolutionPhase) else ResolutionPhase(**p) for p in phases]
        if not phases:
            raise ValueError("A resolution schedule needs at least one phase.")
        previous = 0.0
        for phase in phases:
            if not previous < phase.until <= 1.0:
                raise ValueError(f"Phase ends must increase within (0, 1]; got {[p.until for p in phases]}.")
            if phase.max_pixels < 16 * 16 or phase.token_window < 1:
                raise ValueError(f"Invalid phase {phase}: max_pixels >= 256 and token_window >= 1 needed.")
            previous = phase.until
        if phases[-1].until != 1.0:
            raise ValueError(f"The last phase must end at 1.0, got {phases[-1].until}.")
        self.phases = phases
        self._progress = torch.zeros(1, dtype=torch.float64).share_memory_()

    @classmethod
    def constant(cls, max_pixels: int, token_window: int = 2) -> "ResolutionSchedule":
        return cls([ResolutionPhase(1.0, max_pixels, token_window)])

    def set_progress(self, step: int, max_steps: int) -> None:
        self._progress[0] = step / max(max_steps, 1)

    @property
    def progress(self) -> float:
        return float(self._progress[0])

    def phase(self, progress: float | None = None) -> ResolutionPhase:
        progress = self.progress if progress is None else progress
        for phase in self.phases:
            if progress < phase.until:
                return phase
        return self.phases[-1]

    @property
    def max_token_window(self) -> int:
        return max(phase.token_window for phase in self.phases)


__all__ = ["ResolutionPhase", "ResolutionSchedule"]
