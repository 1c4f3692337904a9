"""The ViQ demo page, in a Hugging Face Space's layout (`app.py` + `requirements.txt` + `README.md`).

    python demo/app.py                                   # the bundled tokenizer, offline, http://127.0.0.1:7860
    python demo/app.py --model XuminYu/ViQ_weights --size 16k --online --port 8080 --host 0.0.0.0
    python demo/app.py --vlm outputs/tiny-sft            # adds a question answered from the codes
    python demo/app.py --export-space outputs/viq-space  # a self-contained Space folder to push

Everything is in `transformers_viq.demo`; `python demo/app.py --help` lists the options.
"""

import sys
from pathlib import Path

from transformers_viq.demo import main


if __name__ == "__main__":
    sys.exit(main(app_dir=Path(__file__).resolve().parent))
