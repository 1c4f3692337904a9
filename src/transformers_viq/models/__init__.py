# Copyright 2026 The transformers-viq contributors. Licensed under the Apache License, Version 2.0.
"""The model classes, one folder per model as in transformers: `viq` (the tokenizer and the Stage-1 encoder) and
`viq_qwen` (the vision-language model). They import torch, transformers, diffusers and each other, nothing else of
this package, so that a model pushed with its code loads where only transformers is installed."""
