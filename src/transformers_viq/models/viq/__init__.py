# Copyright 2026 The transformers-viq contributors. Licensed under the Apache License, Version 2.0.
"""The ViQ tokenizer (`ViQModel`), its Stage-1 encoder (`ViQVisionModel`), their configurations and the image
processor."""
