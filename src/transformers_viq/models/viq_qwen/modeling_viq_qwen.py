# Copyright 2026 The transformers-viq contributors. Licensed under the Apache License, Version 2.0.
"""ViQ vision-language model: Qwen2.5 reading ViQ codes.

    pixels --ViQ tokenizer (frozen by default)--> codes --code embedder--> features (1 per 16x16 patch)
    codes (precomputed, e.g. from a code dataset) --code embedder-----> features
    features --projector (2x2 windows + newline/begin/end tokens)--> LLM embeddings --Qwen2 decoder--> text

Layout follows transformers' Llava / Qwen2-VL: the base model ([`ViQQwenModel`]) owns the vision side, the projector
and the decoder, and merges image embeddings into the text embeddings at the image-token positions in its own
`forward` (TRL's SFTTrainer replaces the top-level forward with a fused LM-head one that calls the base model, so the
merge must live there); [`ViQForConditionalGeneration`] adds the LM head, the loss and generation.

With precomputed `image_codes` the 1.1B-parameter trunk never runs, only the code embedder: that is the training
speed-up of the ViQ paper. The projector follows the default of the authors' released training code.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from transformers import AutoModel, GenerationMixin, PreTrainedModel
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.modeling_outputs import BaseModelOutputWithPast, BaseModelOutputWithPooling, CausalLMOutputWithPast
from transformers.modeling_utils import slice_logits_to_keep
from transformers.utils import logging
from transformers.utils.deprecation import deprecate_kwarg
from transformers.utils.generic import can_return_tuple

from ..viq.modeling_viq import ModelLoaderHook, ViQModel
from ..viq.validation_viq import check_grid
from .configuration_viq_qwen import ViQQwenConfig, get_num_image_tokens


logger = logging.get_logger(__name__)


@dataclass
class ViQQwenModelOutputWithPast(BaseModelOutputWithPast):
    r"""
    image_hidden_states (`torch.FloatTensor` of shape `(num_image_tokens, text_hidden_size)`, *optional*):
        The projected image embeddings that replaced the image tokens (all images, concatenated).
    image_outputs ([`~modeling_outputs.BaseModelOutputWithPooling`], *optional*):
        What [`ViQQwenModel.get_image_features`] returned for the images of this forward (`pooler_output`: one
        `(num_image_tokens_i, text_hidden_size)` tensor per image).
    """

    image_hidden_states: torch.FloatTensor | None = None
    image_outputs: BaseModelOutputWithPooling | None = None


@dataclass
class ViQCausalLMOutputWithPast(CausalLMOutputWithPast):
    r"""
    image_hidden_states (`torch.FloatTensor` of shape `(num_image_tokens, text_hidden_size)`, *optional*):
        The projected image embeddings that replaced the image tokens (all images, concatenated).
    image_outputs ([`~modeling_outputs.BaseModelOutputWithPooling`], *optional*):
        What [`ViQQwenModel.get_image_features`] returned for the images of this forward.
    """

    image_hidden_states: torch.FloatTensor | None = None
    image_outputs: BaseModelOutputWithPooling | None = None


def _windows(features: torch.Tensor, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """`(h*w, C)` row-major patch features -> `(ceil(h/2) * ceil(w/2), 4, C)`: the 2x2 windows, row-major, each in
    (top-left, top-right, bottom-left, bottom-right) order, and which of their 4 positions hold a patch (`None` for
    an even grid, where all do). An odd side is completed with zero features, marked missing."""
    channels = features.shape[-1]
    grid = features.view(height, width, channels)
    valid = None
    if height % 2 or width % 2:
        grid = nn.functional.pad(grid, (0, 0, 0, width % 2, 0, height % 2))
        valid = torch.zeros(grid.shape[:2], dtype=torch.bool, device=features.device)
        valid[:height, :width] = True
        valid = valid.view(grid.shape[0] // 2, 2, grid.shape[1] // 2, 2).permute(0, 2, 1, 3).reshape(-1, 4)
    rows, columns = grid.shape[0] // 2, grid.shape[1] // 2
    grid = grid.view(rows, 2, columns, 2, channels).permute(0, 2, 1, 3, 4)
    return grid.reshape(rows * columns, 4, channels), valid


class ViQSoftmaxPooler(nn.Module):
    """Learned softmax pooling over the 4 tokens of a window, per channel, from each token and the window mean."""

    def __init__(self, dim: int, hidden_act: str):
        super().__init__()
        self.predictor = nn.Sequential(nn.Linear(2 * dim, dim), ACT2FN[hidden_act], nn.Linear(dim, dim))

    def forward(self, windows: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        """`(num_windows, 4, dim)` -> `(num_windows, dim)`; `valid` `(num_windows, 4)` masks missing patches out of
        the mean and of the softmax (a window at the edge of an odd grid pools only the patches it has)."""
        if valid is None:
            context = windows.mean(dim=1, keepdim=True).expand_as(windows)
            weights = self.predictor(torch.cat([windows, context], dim=-1)).softmax(dim=1)
            return (weights * windows).sum(dim=1)
        keep = valid.unsqueeze(-1).to(windows.dtype)
        context = (windows * keep).sum(dim=1, keepdim=True) / keep.sum(dim=1, keepdim=True)
        scores = self.predictor(torch.cat([windows, context.expand_as(windows)], dim=-1))
        weights = scores.masked_fill(~valid.unsqueeze(-1), float("-inf")).softmax(dim=1)
        return (weights * windows * keep).sum(dim=1)


class ViQProjector(nn.Module):
    """
    ViQ features -> LLM embeddings, per image, over 2x2 patch windows (an odd side gets a last row/column of partial
    windows: see [`get_num_image_tokens`]):

    * `"pooled"`: Linear to the LLM width on each patch, learned softmax pooling of each 2x2 window, activation,
      Linear; a learned newline embedding after each window row; learned begin/end embeddings around the image.
    * `"mlp"`: the four patch features of a window concatenated, Linear-activation-Linear.

    The token count per image is [`get_num_image_tokens`], shared with the processor.
    """

    def __init__(self, config: ViQQwenConfig):
        super().__init__()
        vision_dim = config.vision_config.hidden_size
        text_dim = config.text_config.hidden_size
        self.projector_type = config.projector_type
        act = config.projector_hidden_act
        if self.projector_type == "pooled":
            self.proj_in = nn.Linear(vision_dim, text_dim)
            self.pooler = ViQSoftmaxPooler(text_dim, act)
            self.act = ACT2FN[act]
            self.proj_out = nn.Linear(text_dim, text_dim)
            self.image_newline = nn.Parameter(torch.zeros(text_dim))
            self.image_begin = nn.Parameter(torch.zeros(text_dim))
            self.image_end = nn.Parameter(torch.zeros(text_dim))
        else:
            self.proj_in = nn.Linear(4 * vision_dim, text_dim)
            self.act = ACT2FN[act]
            self.proj_out = nn.Linear(text_dim, text_dim)

    def forward(self, features: torch.Tensor, grid_hw: list[tuple[int, int]]) -> list[torch.Tensor]:
        """`features`: `(sum_i h_i*w_i, vision_dim)` packed -> one `(num_image_tokens_i, text_dim)` per image."""
        outputs = []
        for image_features, (h, w) in zip(features.split([h * w for h, w in grid_hw]), grid_hw):
            windows, valid = _windows(image_features, h, w)
            if self.projector_type == "pooled":
                pooled = self.proj_out(self.act(self.pooler(self.proj_in(windows), valid)))
                grid = pooled.view((h + 1) // 2, (w + 1) // 2, -1)
                newline = self.image_newline.to(grid.dtype).expand(grid.shape[0], 1, -1)
                tokens = torch.cat([grid, newline], dim=1).reshape(-1, grid.shape[-1])
                begin, end = self.image_begin[None].to(tokens.dtype), self.image_end[None].to(tokens.dtype)
                tokens = torch.cat([begin, tokens, end])
            else:
                tokens = self.proj_out(self.act(self.proj_in(windows.flatten(1))))
            outputs.append(tokens)
        return outputs


def _any_trainable(module: nn.Module) -> bool:
    return any(param.requires_grad for param in module.parameters())


class ViQQwenPreTrainedModel(ModelLoaderHook, PreTrainedModel):
    config: ViQQwenConfig
    config_class = ViQQwenConfig
    base_model_prefix = "model"
    input_modalities = ("image", "text")
    supports_gradient_checkpointing = True
    _no_split_modules = ["ViQEncoderLayer", "ViQVisionEmbeddings", "Qwen2DecoderLayer"]
    _skip_keys_device_placement = "cache"
    _supports_flash_attn = True
    _supports_sdpa = True
    _supports_attention_backend = True

    def _init_weights(self, module):
        std = getattr(self.config.text_config, "initializer_range", 0.02)
        if isinstance(module, ViQProjector) and module.projector_type == "pooled":
            scale = module.image_newline.shape[0] ** -0.5
            for embedding in (module.image_newline, module.image_begin, module.image_end):
                init.normal_(embedding, std=scale)
        elif isinstance(module, nn.Linear):
            init.normal_(module.weight, std=std)
            if module.bias is not None:
                init.zeros_(module.bias)
        else:
            super()._init_weights(module)


class ViQQwenModel(ViQQwenPreTrainedModel):
    """The ViQ tokenizer, the projector and the Qwen2 decoder, without the LM head."""

    def __init__(self, config: ViQQwenConfig):
        super().__init__(config)
        self.vision_tower = ViQModel(config.vision_config)
        self.projector = ViQProjector(config)
        self.language_model = AutoModel.from_config(config.text_config)
        self.post_init()

    def get_input_embeddings(self):
        return self.language_model.get_input_embeddings()

    def set_input_embeddings(self, value):
        self.language_model.set_input_embeddings(value)

    @can_return_tuple
    def get_image_features(
        self,
        pixel_values: torch.FloatTensor | None = None,
        image_codes: torch.LongTensor | None = None,
        image_grid_hw: torch.LongTensor | None = None,
        **kwargs,
    ) -> BaseModelOutputWithPooling | tuple:
        r"""
        Encode images for the LLM.

        Args:
            pixel_values (`torch.FloatTensor` of shape `(sum_i h_i*w_i, 768)`, *optional*):
                Packed patches: the ViQ tokenizer encodes them (under `torch.no_grad()` unless one of its
                parameters requires a gradient).
            image_codes (`torch.LongTensor` of shape `(sum_i 4*h_i*w_i,)`, *optional*):
                Precomputed codes: only the code embedder runs.
            image_grid_hw (`torch.LongTensor` of shape `(num_images, 2)`):
                Patch grid of each image.
            kwargs:
                `output_hidden_states` / `output_attentions` (`bool`): return the hidden states / attention weights of
                the tokenizer's trunk (pixels only; default: the config's setting); `return_dict` (`bool`): `False`
                returns the fields of the output as a tuple. (Keyword arguments rather than named parameters:
                `generate` hands `get_image_features` the generation arguments its signature names.)

        Returns:
            [`~modeling_outputs.BaseModelOutputWithPooling`]: `last_hidden_state`
            `(sum_i h_i*w_i, vision_hidden_size)`, the features the codes stand for; `pooler_output`, a tuple of one
            `(num_image_tokens_i, text_hidden_size)` LLM embedding tensor per image (what replaces that image's
            tokens); `hidden_states` and `attentions` of the tokenizer when asked for.
        """
        if (pixel_values is None) == (image_codes is None):
            raise ValueError("Pass exactly one of `pixel_values` and `image_codes` (with `image_grid_hw`).")
        grid_hw = check_grid(image_grid_hw)
        for h, w in grid_hw:
            get_num_image_tokens(h, w, self.config.projector_type)
        wanted = {name: getattr(self.config, name) if kwargs.get(name) is None else kwargs[name]
                  for name in ("output_hidden_states", "output_attentions")}  # fmt: skip
        vision_outputs = None
        # A frozen tokenizer (`requires_grad=False`, set by the training side) runs without building a graph.
        if pixel_values is not None:
            # the tokenizer is asked only for what was requested, so its default forward stays the training one
            requested = {name: True for name, value in wanted.items() if value}
            with torch.set_grad_enabled(torch.is_grad_enabled() and _any_trainable(self.vision_tower)):
                vision_outputs = self.vision_tower(
                    pixel_values, image_grid_hw, return_pooler_output=False, **requested
                )
            features = vision_outputs.last_hidden_state
        else:
            with torch.set_grad_enabled(torch.is_grad_enabled() and _any_trainable(self.vision_tower.code_embedder)):
                features = self.vision_tower.codes_to_features(image_codes, image_grid_hw)
        embeddings = self.projector(features.to(self.projector.proj_in.weight.dtype), grid_hw)
        return BaseModelOutputWithPooling(
            last_hidden_state=features,
            pooler_output=tuple(embeddings),
            hidden_states=getattr(vision_outputs, "hidden_states", None),
            attentions=getattr(vision_outputs, "attentions", None),
        )

    def get_placeholder_mask(self, input_ids: torch.LongTensor | None, inputs_embeds: torch.Tensor, num_features: int):
        """Boolean mask of the image-token positions; raises if their number differs from the image features'."""
        if input_ids is None:
            token = self.get_input_embeddings()(torch.tensor(self.config.image_token_id, device=inputs_embeds.device))
            mask = (inputs_embeds == token).all(-1)
        else:
            mask = input_ids == self.config.image_token_id
        num_tokens = int(mask.sum())
        if num_tokens != num_features:
            raise ValueError(
                f"Image features and image tokens do not match: the text has {num_tokens} image tokens (id "
                f"{self.config.image_token_id}) but the images give {num_features} embeddings. Build inputs with "
                "ViQProcessor, which expands each image token to the right count, and do not truncate them away "
                "(e.g. SFTConfig(max_length=None))."
            )
        return mask.unsqueeze(-1).expand_as(inputs_embeds)

    @can_return_tuple
    @deprecate_kwarg("past_key_values", "5.40.0", new_name="cache")
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        pixel_values: torch.FloatTensor | None = None,
        image_codes: torch.LongTensor | None = None,
        image_grid_hw: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache=None,
        inputs_embeds: torch.FloatTensor | None = None,
        mm_encoder_outputs: dict[str, BaseModelOutputWithPooling] | None = None,
        **kwargs,
    ) -> ViQQwenModelOutputWithPast | tuple:
        r"""
        A forward without image inputs reads every token as text, the image token included (generation steps after
        the first one, text-only batches); with image inputs, the number of image tokens must match the images.

        Args:
            input_ids (`torch.LongTensor` of shape `(batch_size, sequence_length)`):
                Text with each image's placeholder tokens already expanded (see [`ViQProcessor`]).
            pixel_values (`torch.FloatTensor` of shape `(sum_i h_i*w_i, 768)`, *optional*):
                Packed patches of all images of the batch, in the order their placeholders appear.
            image_codes (`torch.LongTensor` of shape `(sum_i 4*h_i*w_i,)`, *optional*):
                Precomputed codes instead of pixels (never both).
            image_grid_hw (`torch.LongTensor` of shape `(num_images, 2)`, *optional*):
                Patch grid of each image; required with either image input.
            position_ids (`torch.LongTensor` of shape `(batch_size, sequence_length)`, *optional*):
                With no `attention_mask`, positions that restart at 0 mark packed samples: each attends only to
                itself (block-diagonal causal attention).
            mm_encoder_outputs (`dict[str, BaseModelOutputWithPooling]`, *optional*):
                Images already encoded by [`~ViQQwenModel.get_image_features`], under the key `"image"`, instead of
                `pixel_values` / `image_codes` (`generate` encodes the images once, before the first step, and passes
                them so).
            return_dict (`bool`, *optional*):
                `False` returns the fields of the output as a tuple.
        """
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("You must specify exactly one of `input_ids` or `inputs_embeds`.")
        if pixel_values is not None and image_codes is not None:
            raise ValueError("Pass either `pixel_values` or `image_codes`, not both.")
        image_outputs = (mm_encoder_outputs or {}).get("image")
        if image_outputs is not None and (pixel_values is not None or image_codes is not None):
            raise ValueError(
                "Pass either pre-encoded images (`mm_encoder_outputs`) or `pixel_values` / `image_codes`, not both."
            )
        if inputs_embeds is None:
            inputs_embeds = self.get_input_embeddings()(input_ids)

        if pixel_values is not None or image_codes is not None:
            # the tokenizer's own hidden states and attentions are asked for through `get_image_features` only
            image_outputs = self.get_image_features(
                pixel_values, image_codes, image_grid_hw, output_hidden_states=False, output_attentions=False,
                return_dict=True,
            )
        image_embeds = None
        if image_outputs is not None:
            image_embeds = torch.cat(tuple(image_outputs.pooler_output))
            image_embeds = image_embeds.to(inputs_embeds.device, inputs_embeds.dtype)
            mask = self.get_placeholder_mask(input_ids, inputs_embeds, image_embeds.shape[0])
            inputs_embeds = inputs_embeds.masked_scatter(mask, image_embeds)

        if cache is None and attention_mask is None and position_ids is not None and position_ids.ndim == 2:
            # Maybe packed samples (positions restarting at 0, no attention mask): transformers builds the
            # block-diagonal causal mask only without a cache, so the decoder must not create one. Nothing here needs a
            # cache unless asked for, so it is turned off without looking (looking costs a device sync per step).
            if kwargs.get("use_cache") is not True:
                kwargs["use_cache"] = False
            else:
                from transformers.masking_utils import find_packed_sequence_indices

                if find_packed_sequence_indices(position_ids) is not None:
                    kwargs["use_cache"] = False

        outputs = self.language_model(
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache,
            inputs_embeds=inputs_embeds,
            **kwargs,
        )
        return ViQQwenModelOutputWithPast(
            last_hidden_state=outputs.last_hidden_state,
            cache=outputs.cache,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
            image_hidden_states=image_embeds,
            image_outputs=image_outputs,
        )


class ViQForConditionalGeneration(ViQQwenPreTrainedModel, GenerationMixin):
    r"""
    Qwen2.5 on ViQ codes, with an LM head.

    Example:

    ```python
    >>> import transformers_viq
    >>> from transformers_viq import ViQForConditionalGeneration, ViQProcessor
    >>> model = ViQForConditionalGeneration.from_pretrained("me/viq-qwen2.5-0.5b")
    >>> processor = ViQProcessor.from_pretrained("me/viq-qwen2.5-0.5b")
    >>> messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is this?"}]}]
    >>> prompt = processor.apply_chat_template(messages, add_generation_prompt=True)
    >>> inputs = processor(images=[image], text=prompt, return_tensors="pt")   # or image_codes=..., image_grid_hw=...
    >>> generated = model.generate(**inputs, max_new_tokens=32)
    ```
    """

    _tied_weights_keys = {"lm_head.weight": "model.language_model.embed_tokens.weight"}
    # tensor parallelism: the LM head is split by vocabulary rows, like the embedding it may be tied to
    _tp_plan = {"lm_head": "colwise_gather_output"}

    def __init__(self, config: ViQQwenConfig):
        super().__init__(config)
        self.model = ViQQwenModel(config)
        self.lm_head = nn.Linear(config.text_config.hidden_size, config.text_config.vocab_size, bias=False)
        self.post_init()

    def get_input_embeddings(self):
        return self.model.get_input_embeddings()

    def set_input_embeddings(self, value):
        self.model.set_input_embeddings(value)

    def get_output_embeddings(self) -> nn.Module:
        return self.lm_head

    def get_image_features(self, pixel_values=None, image_codes=None, image_grid_hw=None, **kwargs):
        """As [`ViQQwenModel.get_image_features`]."""
        return self.model.get_image_features(pixel_values, image_codes, image_grid_hw, **kwargs)

    def _warn_if_fresh_projector_is_frozen(self) -> None:
        """Training with the projector `from_viq_and_qwen` just made, but frozen: never silent (warned once)."""
        projector = self.model.projector
        if not getattr(projector, "freshly_initialised", False) or getattr(projector, "_frozen_warned", False):
            return
        if not any(parameter.requires_grad for parameter in projector.parameters()):
            projector._frozen_warned = True
            logger.warning(
                "Training with a freshly initialised projector that is frozen: the LLM gets random image embeddings "
                "and the projector would be saved untrained. Unfreeze it (training.freeze(model, projector=False)) "
                "or, with LoRA/DoRA, keep it in `modules_to_save` (training.language_model_lora_config does)."
            )

    @can_return_tuple
    @deprecate_kwarg("past_key_values", "5.40.0", new_name="cache")
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        pixel_values: torch.FloatTensor | None = None,
        image_codes: torch.LongTensor | None = None,
        image_grid_hw: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache=None,
        inputs_embeds: torch.FloatTensor | None = None,
        labels: torch.LongTensor | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        mm_encoder_outputs: dict[str, BaseModelOutputWithPooling] | None = None,
        **kwargs,
    ) -> ViQCausalLMOutputWithPast | tuple:
        r"""
        As [`ViQQwenModel.forward`], plus:

        labels (`torch.LongTensor` of shape `(batch_size, sequence_length)`, *optional*):
            Next-token targets (`-100` is ignored); the loss is the mean cross-entropy over supervised positions.
        logits_to_keep (`int` or `torch.Tensor`, *optional*, defaults to 0):
            Compute logits only for the last `logits_to_keep` positions (0: all).
        """
        if self.training and labels is not None:
            self._warn_if_fresh_projector_is_frozen()
        outputs = self.model(
            return_dict=True,  # this forward reads fields by name; its own `return_dict` is applied on return
            input_ids=input_ids,
            pixel_values=pixel_values,
            image_codes=image_codes,
            image_grid_hw=image_grid_hw,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache,
            inputs_embeds=inputs_embeds,
            mm_encoder_outputs=mm_encoder_outputs,
            **kwargs,
        )
        hidden_states = slice_logits_to_keep(outputs.last_hidden_state, logits_to_keep)
        logits = self.lm_head(hidden_states)
        loss = None
        if labels is not None:
            vocab_size = self.config.text_config.vocab_size
            loss = self.loss_function(logits=logits, labels=labels, vocab_size=vocab_size, **kwargs)
        return ViQCausalLMOutputWithPast(
            loss=loss,
            logits=logits,
            cache=outputs.cache,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
            image_hidden_states=outputs.image_hidden_states,
            image_outputs=outputs.image_outputs,
        )

    def generate(self, *args, **kwargs):
        r"""
        [`~transformers.GenerationMixin.generate`], refusing right-padded batches: a decoder-only model continues each
        prompt after its last position, which for a right-padded prompt is padding, so its answer would be silently
        wrong. [`ViQProcessor`] pads on the left by default.
        """
        attention_mask = kwargs.get("attention_mask")
        if attention_mask is not None and attention_mask.ndim == 2 and not bool(attention_mask[:, -1].all()):
            rows = (attention_mask[:, -1] == 0).nonzero().flatten().tolist()
            raise ValueError(
                f"Right-padded batch passed to generate (rows {rows} end in padding): generation continues after the "
                "last position, so those rows would continue from padding. Pad on the left (ViQProcessor's default, "
                "or `padding_side='left'`)."
            )
        return super().generate(*args, **kwargs)

    def _prepare_multimodal_encoder_kwargs_for_generation(self, model_kwargs: dict) -> dict:
        # transformers encodes pixel inputs once before the first step (into `mm_encoder_outputs`); precomputed codes
        # are encoded the same way here (the base method would drop them unencoded: it pre-encodes pixels only)
        if model_kwargs.get("image_codes") is None or model_kwargs.get("pixel_values") is not None:
            return super()._prepare_multimodal_encoder_kwargs_for_generation(model_kwargs)
        encoded = model_kwargs.setdefault("mm_encoder_outputs", {})
        if encoded.get("image") is not None:
            raise ValueError("Pass either pre-encoded images (`mm_encoder_outputs`) or `image_codes`, not both.")
        image_codes, image_grid_hw = model_kwargs.pop("image_codes"), model_kwargs.pop("image_grid_hw", None)
        encoded["image"] = self.model.get_image_features(image_codes=image_codes, image_grid_hw=image_grid_hw,
                                                         return_dict=True)  # fmt: skip
        return model_kwargs

    def prepare_inputs_for_generation(self, *args, is_first_iteration: bool | None = False, **kwargs):
        model_inputs = super().prepare_inputs_for_generation(*args, is_first_iteration=is_first_iteration, **kwargs)
        if not is_first_iteration and kwargs.get("use_cache", True):
            # images are merged at prefill; later steps only see the new tokens
            for key in ("pixel_values", "image_codes", "image_grid_hw"):
                model_inputs.pop(key, None)
        return model_inputs

    # ---- building and training helpers --------------------------------------------------------------------------
    @classmethod
    def from_viq_and_qwen(
        cls,
        viq,
        qwen,
        *,
        viq_size: str | None = None,
        projector_type: str = "pooled",
        image_token_id: int = 151655,
        dtype: torch.dtype | None = None,
        include_decoder: bool = False,
        from_pretrained_kwargs: dict | None = None,
        **config_kwargs,
    ) -> "ViQForConditionalGeneration":
        r"""
        An untrained VLM from its parts: a ViQ tokenizer and a Qwen2.5 causal LM (0.5B to 7B), with a fresh projector.

        Args:
            viq (`str`, `os.PathLike` or [`ViQModel`]):
                A ViQ tokenizer: HF-format folder/repo, or the authors' layout with `viq_size`, or a loaded model.
            qwen (`str`, `os.PathLike` or `Qwen2ForCausalLM`):
                A Qwen2.5 checkpoint (e.g. `"Qwen/Qwen2.5-0.5B-Instruct"`) or a loaded model.
            viq_size (`str`, *optional*):
                Size of the authors' layout to read `viq` from (`"16k"`, ...; read by the checkpoint loader that
                `import transformers_viq` installs).
            projector_type (`str`, *optional*, defaults to `"pooled"`):
                `"pooled"` (released) or `"mlp"`.
            image_token_id (`int`, *optional*, defaults to 151655):
                `<|image_pad|>` of the Qwen2.5 vocabulary.
            dtype (`torch.dtype`, *optional*):
                Load both parts in this dtype (e.g. `torch.bfloat16` for a 7B LLM: no fp32 copy in memory).
            include_decoder (`bool`, *optional*, defaults to `False`):
                Keep the tokenizer's latent head and VAE (reconstruction only, ~0.8 GB in fp32) in the VLM.
            from_pretrained_kwargs (`dict`, *optional*):
                Passed to both loads (`revision`, `token`, `cache_dir`, `local_files_only`, `attn_implementation`,
                ...).
            config_kwargs:
                Other [`ViQQwenConfig`] fields (`projector_hidden_act`).
        """
        from transformers import AutoModelForCausalLM

        load_kwargs = dict(from_pretrained_kwargs or {})
        if dtype is not None:
            load_kwargs["dtype"] = dtype
        if not isinstance(viq, ViQModel):
            size = {} if viq_size is None else {"viq_size": viq_size}  # read by the package's checkpoint loader
            viq = ViQModel.from_pretrained(viq, **size, **load_kwargs)
        if not include_decoder and viq.config.include_decoder:
            viq.latent_head = viq.vae = None
            viq.config.include_decoder = False
        if isinstance(qwen, PreTrainedModel):
            language = qwen
        else:
            if cls.checkpoint_loader is not None:  # a missing folder or no network: said at once, not after retries
                cls.checkpoint_loader.check_source(qwen, **load_kwargs)
            language = AutoModelForCausalLM.from_pretrained(qwen, **load_kwargs)
        if getattr(language, "model", None) is None or getattr(language, "lm_head", None) is None:
            raise ValueError(
                "Expected a causal LM with `.model` and `.lm_head` (Qwen2ForCausalLM), got "
                f"{type(language).__name__}."
            )
        config = cls.config_class(
            vision_config=viq.config.to_dict(),
            text_config=language.config.to_dict(),
            projector_type=projector_type,
            image_token_id=image_token_id,
            tie_word_embeddings=bool(getattr(language.config, "tie_word_embeddings", False)),
            **config_kwargs,
        )
        with torch.device("meta"):
            model = cls(config)
        model.model.vision_tower = viq
        model.model.language_model = language.model
        model.lm_head = language.lm_head
        model.model.projector = ViQProjector(config)
        for module in model.model.projector.modules():
            model._init_weights(module)
        model.model.projector.freshly_initialised = True  # in memory only: training it while frozen is warned about
        if config.tie_word_embeddings:
            model.lm_head.weight = model.model.language_model.get_input_embeddings().weight
        leftover = [name for name, tensor in model.state_dict().items() if tensor.is_meta]
        if leftover:
            raise RuntimeError(f"Parameters left uninitialised when assembling the VLM: {leftover[:10]}")
        model.name_or_path = ""
        if dtype is not None:
            model = model.to(dtype)
        return model


__all__ = [
    "ViQForConditionalGeneration",
    "ViQProjector",
    "ViQQwenModel",
    "ViQQwenPreTrainedModel",
]
