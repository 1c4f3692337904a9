# Copyright 2026 The transformers-viq contributors. Licensed under the Apache License, Version 2.0.
"""The losses of ViQ training (paper sections 3 and 4.4, Eq. 1-8).

* Stages 1, 2-1, 2-2: the text loss (cross-entropy of a temporary LLM, computed by `TextAlignmentHead`),
  [`distillation_loss`] (`1 - cos` between the student's and the frozen teacher's pooled token, weight 10 as in the
  released code) and, from Stage 2-1 on, [`latent_regression_loss`] (MSE of the predicted Qwen-Image VAE latent to the
  VAE encoder's posterior mean: the paper's Gaussian NLL with unit variance, up to a constant factor).
* Decoder fine-tuning (section 4.4, Eq. 8): pixel MSE, LPIPS (`perceptual.LPIPS`), [`latent_kl_loss`], the hinge GAN
  losses ([`discriminator_hinge_loss`], [`generator_adversarial_loss`]) and [`repa_loss`] (alignment to DINOv2).

Plain functions of tensors: no module state, no logging.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def distillation_loss(student: torch.Tensor, teacher: torch.Tensor, weight: float = 10.0) -> torch.Tensor:
    """
    `weight * mean_i (1 - cos(student_i, teacher_i))` over images.

    Args:
        student (`torch.Tensor` of shape `(num_images, dim)`): the student's attention-pooled tokens.
        teacher (`torch.Tensor` of shape `(num_images, dim)`): the frozen teacher's pooled tokens (no gradient).
        weight (`float`, *optional*, defaults to 10.0): the released code's factor.
    """
    if student.shape != teacher.shape:
        raise ValueError(f"student {tuple(student.shape)} and teacher {tuple(teacher.shape)} pooled tokens differ.")
    cosine = (F.normalize(student.float(), dim=-1) * F.normalize(teacher.float().detach(), dim=-1)).sum(-1)
    return weight * (1.0 - cosine).mean()


def latent_regression_loss(predicted: list[torch.Tensor], target: list[torch.Tensor]) -> torch.Tensor:
    """
    Mean over images of the mean squared error between predicted VAE latents and the VAE encoder's posterior means
    (raw latent space, no mean/std normalisation), computed in float32.

    Args:
        predicted (`list[torch.Tensor]`): one `(channels, 2h, 2w)` latent per image.
        target (`list[torch.Tensor]`): the same shapes.
    """
    if len(predicted) != len(target) or not predicted:
        raise ValueError(f"Need one target per predicted latent, got {len(predicted)} and {len(target)}.")
    losses = []
    for index, (pred, goal) in enumerate(zip(predicted, target)):
        if pred.shape != goal.shape:
            raise ValueError(f"Image {index}: predicted latent {tuple(pred.shape)} vs target {tuple(goal.shape)}.")
        losses.append(F.mse_loss(pred.float(), goal.float().detach()))
    return torch.stack(losses).mean()


def latent_kl_loss(latents: list[torch.Tensor]) -> torch.Tensor:
    """
    KL divergence of `N(mu, I)` from the prior `N(0, I)`, per latent element: `mean(mu**2) / 2`.

    The latent head predicts a mean only (the released architecture has no variance output), so the KL term of the
    VAE objective is taken with unit posterior variance: a pull of the latents towards the prior.
    """
    return torch.stack([0.5 * latent.float().pow(2).mean() for latent in latents]).mean()


def discriminator_hinge_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """Hinge loss of the discriminator: `(mean(relu(1 - D(real))) + mean(relu(1 + D(fake)))) / 2`."""
    return 0.5 * (F.relu(1.0 - real_logits.float()).mean() + F.relu(1.0 + fake_logits.float()).mean())


def generator_adversarial_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """The generator's side of the hinge GAN: `-mean(D(fake))`."""
    return -fake_logits.float().mean()


def repa_loss(hidden_states: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """
    REPA alignment: `-mean cos(h_n, t_n)` over tokens, between projected hidden states and (frozen) target features.

    Args:
        hidden_states (`torch.Tensor` of shape `(num_tokens, dim)`): projected states of the latent head's
            preprocess layers.
        target (`torch.Tensor` of shape `(num_tokens, dim)`): DINOv2 patch features of the same images and grid.
    """
    if hidden_states.shape != target.shape:
        raise ValueError(f"REPA: states {tuple(hidden_states.shape)} vs target features {tuple(target.shape)}.")
    cosine = (F.normalize(hidden_states.float(), dim=-1) * F.normalize(target.float().detach(), dim=-1)).sum(-1)
    return -cosine.mean()


__all__ = [
    "discriminator_hinge_loss",
    "distillation_loss",
    "generator_adversarial_loss",
    "latent_kl_loss",
    "latent_regression_loss",
    "repa_loss",
]
