# Copyright 2026 The transformers-viq contributors. Licensed under the Apache License, Version 2.0.
"""`python -m transformers_viq.demo`: the demo page, as `python demo/app.py` (the bundled model and samples are found
in a checkout of the repository)."""

import sys

from ..demo import main


sys.exit(main())
