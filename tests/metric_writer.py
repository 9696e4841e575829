"""A process that logs metrics to a tracking store: the concurrent-writers test spawns several. A module of its own
so that each spawned process imports the tracker alone, not the test module with torch and Ray behind it."""

from ray_msa.tracking import Tracker


def log_many(uri: str, run_id: str, writer: int, steps: int) -> None:
    tracker = Tracker(uri)
    for step in range(steps):
        tracker.metrics(run_id, {f"w{writer}_a": step, f"w{writer}_b": -step}, step=step)
