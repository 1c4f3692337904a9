"""One model shared by many threads: encode and decode of images of mixed sizes give, in every thread, exactly what
one thread alone gives (the RoPE tables, the VAE decoder's feature cache and the other per-call state a forward
keeps must not leak between concurrent calls). CPU, tiny model."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from transformers_viq import ViQImageProcessor
from transformers_viq.testing import make_tiny_model


SIZES = [(32, 32), (48, 64), (64, 32), (32, 96), (80, 48), (96, 64)]  # (height, width) in pixels


def test_concurrent_encode_and_decode_match_single_threaded_results():
    model = make_tiny_model()
    model.quantizer.rotary_emb.cache_bytes = 64 * 1024  # a small RoPE cache, so that threads also evict entries
    processor = ViQImageProcessor(do_resize=False)
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in SIZES]
    inputs = [processor(images=[image], return_tensors="pt") for image in images]

    def work(index: int):
        with torch.no_grad():
            out = model.encode(**inputs[index], return_pooler_output=False)
            pixels = model.decode(out.image_codes, out.image_grid_hw)[0]
        return out.image_codes, pixels

    expected = [work(index) for index in range(len(SIZES))]
    jobs = [index % len(SIZES) for index in range(96)]
    start = threading.Barrier(8)

    def job(index: int):
        if index < 8:
            start.wait()  # the first calls of all threads begin together
        return work(index % len(SIZES))

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(job, range(len(jobs))))
    for index, (codes, pixels) in zip(jobs, results):
        assert torch.equal(codes, expected[index][0]), f"codes of image {index} ({SIZES[index]}) differ"
        torch.testing.assert_close(pixels, expected[index][1], rtol=0, atol=0)
