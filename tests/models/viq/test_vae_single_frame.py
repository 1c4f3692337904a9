"""The Qwen-Image VAE of the ViQ decoder runs still images through 2-D convolutions: the same numbers as diffusers'
3-D causal convolutions, forward and backward, with the same parameters."""

import torch
from diffusers import AutoencoderKLQwenImage

from transformers_viq.models.viq.modeling_viq import build_qwen_image_vae
from transformers_viq.testing import TINY_VAE


def test_single_frame_path_matches_the_3d_convolutions():
    torch.manual_seed(0)
    vae = build_qwen_image_vae(dict(TINY_VAE))
    reference = AutoencoderKLQwenImage(**TINY_VAE)
    reference.load_state_dict(vae.state_dict())
    assert vae.state_dict().keys() == reference.state_dict().keys()
    swapped = [module for module in vae.modules() if type(module).__name__ == "SingleFrameCausalConv3d"]
    assert len(swapped) > 10 and not any(type(m).__name__ == "SingleFrameCausalConv3d" for m in reference.modules())

    latents = torch.randn(1, TINY_VAE["z_dim"], 1, 6, 5)
    pixels = torch.rand(1, 3, 1, 32, 24) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(vae.decode(latents).sample, reference.decode(latents).sample, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(vae.encode(pixels).latent_dist.mean, reference.encode(pixels).latent_dist.mean,
                                   atol=1e-5, rtol=1e-5)  # fmt: skip
        clip = torch.randn(1, TINY_VAE["z_dim"], 3, 6, 5)  # several frames: the 3-D path, unchanged
        torch.testing.assert_close(vae.decode(clip).sample, reference.decode(clip).sample)

    vae.decode(latents).sample.square().mean().backward()
    reference.decode(latents).sample.square().mean().backward()
    for (name, parameter), other in zip(vae.named_parameters(), reference.parameters()):
        if other.grad is None:
            assert parameter.grad is None or not parameter.grad.any(), name
        else:
            torch.testing.assert_close(parameter.grad, other.grad, atol=1e-5, rtol=1e-4, msg=name)
