# Copyright 2026 The transformers-viq contributors. Licensed under the Apache License, Version 2.0.
"""The ViQ vision-language model: Qwen2.5 on ViQ codes (`ViQForConditionalGeneration`), its configuration and
processor."""
