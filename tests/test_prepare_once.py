"""Under several processes, `training/sft.py` prepares the data once: the checks and token counts run on the main
process and the others receive them (or its error). Two CPU processes over gloo; no network."""

from __future__ import annotations

import os

import torch.multiprocessing as mp


def _worker(rank: int, store: str, marks: str, results) -> None:
    import torch.distributed as dist

    from transformers_viq.training.data import run_on_main_process

    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    try:
        for call, fail in (("counts", False), ("check", True)):

            def compute():
                open(os.path.join(marks, f"{call}-computed-by-{rank}"), "w").close()
                if fail:
                    raise ValueError("row 3 (id 'x') has 2 images but 1 image item")
                return [10, 20, 30], {3: "unreadable"}

            try:
                results[(call, rank)] = ("result", run_on_main_process(compute))
            except ValueError as error:
                results[(call, rank)] = ("error", str(error))
    finally:
        dist.destroy_process_group()


def test_the_main_process_computes_once_and_every_process_gets_the_result_or_the_error(tmp_path):
    marks = tmp_path / "marks"
    marks.mkdir()
    with mp.Manager() as manager:
        results = manager.dict()
        mp.spawn(_worker, args=(str(tmp_path / "store"), str(marks), results), nprocs=2, join=True)
        results = dict(results)
    assert sorted(os.listdir(marks)) == ["check-computed-by-0", "counts-computed-by-0"]  # on the main process only
    for rank in (0, 1):
        assert results[("counts", rank)] == ("result", ([10, 20, 30], {3: "unreadable"}))
        # an error reaches every process: none waits for a result that will not come
        assert results[("check", rank)] == ("error", "row 3 (id 'x') has 2 images but 1 image item")
