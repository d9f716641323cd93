"""Cancel latency of the web app's job runner: from ``JobRunner.cancel`` to the job's snapshot saying cancelled.

The suite checks that a cancel reaches a running job and stops it at the step it was on, checkpointed
(``tests/test_app.py``); how *fast* that happens depends on the machine and its load, so it is measured here
instead of asserted there. A cancel lands at the next training step, then the checkpoint and ``run.json`` are
written, so the latency is about one step plus that write.

Usage::

    python bench/cancel_bench.py [--tries 5] [--device cpu]

It uses the suite's tiny settings and the tiny random SD (nothing downloaded) and writes only to a temporary folder.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from conftest import TINY_OVERRIDES  # noqa: E402

from text3d.app.jobs import JobRunner, JobStatus  # noqa: E402
from text3d.config import GenerateConfig, apply_overrides  # noqa: E402
from text3d.guidance.random_models import save_random_sd  # noqa: E402
from text3d.pipeline import load_guidance  # noqa: E402

LONG = 100_000
"""Steps of a job that only ends by being cancelled."""


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tries", type=int, default=5)
    p.add_argument("--device", default="cpu")
    args = p.parse_args()

    with tempfile.TemporaryDirectory(prefix="text3d-cancel-") as tmp:
        model = save_random_sd(Path(tmp) / "tiny-sd", size="tiny", seed=0)
        base = apply_overrides(GenerateConfig(prompt="a long job"), TINY_OVERRIDES)
        base = apply_overrides(
            base,
            {
                "model.model_id": str(model),
                "out_dir": str(Path(tmp) / "outputs"),
                "device": args.device,
                "coarse.steps": str(LONG),
            },
        )
        runner = JobRunner(loader=lambda: load_guidance(base))
        latencies = []
        try:
            for i in range(args.tries):
                job = runner.submit(base)
                snap = runner.wait(job.id)
                while snap.progress is None or snap.progress.step < 2:
                    snap = runner.wait(job.id, snap.version, timeout=60)
                t0 = time.perf_counter()
                runner.cancel(job.id)
                done = runner.wait_done(job.id, timeout=300)
                latency = time.perf_counter() - t0
                if done.status is not JobStatus.CANCELLED:
                    print(f"try {i + 1}: the job did not end cancelled ({done.status.value})")
                    return 1
                latencies.append(latency)
                print(f"try {i + 1}: cancelled at step {done.progress.step} after {latency:.3f} s")
        finally:
            runner.close()
    print(
        f"cancel latency over {len(latencies)} tries on {args.device}: median {statistics.median(latencies):.3f} s, "
        f"max {max(latencies):.3f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
