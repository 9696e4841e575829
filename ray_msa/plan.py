"""How a study's (or a grid's) trials use the cluster, decided once Ray is up: read by the study, by the Tune
trials and by the Ray Train runs they start."""

from __future__ import annotations

from dataclasses import dataclass

TRIAL_CPU = 0.5  # a Tune trial actor that only waits on its Ray Train run


@dataclass(frozen=True)
class Plan:
    """How the study's trials use the cluster, decided once Ray is up."""

    use_gpu: bool
    engine: str
    cpus_per_worker: float
    threads: int
    concurrent: int
    workers: int
    storage: str
    max_failures: int
    in_trial: bool  # one CPU worker, no engine named: trials train in their own process, the final model in a task

    @property
    def worker_resources(self) -> dict[str, float]:
        return {"CPU": self.cpus_per_worker, **({"GPU": 1} if self.use_gpu else {})}

    @property
    def trial_resources(self) -> dict[str, float]:
        """A Tune trial's: its worker's CPUs too when it trains itself (the same CPUs in all as a Ray Train run's)."""
        return {"cpu": TRIAL_CPU + (self.cpus_per_worker if self.in_trial else 0.0)}

    @property
    def reuse_trial_processes(self) -> bool:
        """A trial that trains in its own process hands that process, its imports done, to the next trial (Tune's
        `reuse_actors`; a trial that died or did not stop in time gets a new one): a new process would import torch,
        MLflow and the models again. A Ray Train run's workers are its own, so its trial actor is not worth keeping."""
        return self.in_trial

    @property
    def trial_failures(self) -> int:
        """Restarts of a trial by Tune: those of its own process when it trains itself; Ray Train restarts its
        workers (Tune restarts on top would multiply the runs of a trial that keeps failing)."""
        return self.max_failures if self.in_trial else 0
