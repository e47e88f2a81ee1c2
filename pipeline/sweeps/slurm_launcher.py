"""``hydra/launcher=slurm``: Hydra's submitit launcher, waiting for its Slurm jobs itself.

The plugin waits for each job with submitit, which learns a job's end from Slurm's
accounting (``sacct``): a job that ends without a result (cancelled with ``scancel``, over
its time limit, killed) fails the whole sweep with UncompletedJobError, its other jobs left
running; on a cluster without accounting, it is waited for forever, with a warning at every
try. This launcher submits the jobs the plugin's way, then waits for each job's result file
and asks Slurm's queue (``squeue``) which jobs are still in it: a job out of the queue without
a result is recorded in one line (its run ended, if the job left it RUNNING) and the sweep
goes on. A stop of the sweep (Ctrl-C, SIGTERM) cancels its jobs (``scancel``) first.
"""

import contextlib
import sys
import time
from collections.abc import Sequence

from hydra.core.utils import JobReturn, JobStatus
from hydra_plugins.hydra_submitit_launcher import submitit_launcher

from pipeline.processes import slurm, stopping
from pipeline.sweeps import hydra_adapter, parent_run

RESULT_POLL_SECONDS = 1.0  # how often the jobs' result files are looked for
QUEUE_POLL_SECONDS = 5.0  # how often squeue is asked
# A job out of the queue this long without its result file has ended without one (a shared
# filesystem may show the file late: submitit allows 15 s, after refreshing the folder too).
RESULT_GRACE_SECONDS = 10.0
NO_ACCOUNTING = (
    "warning: sacct does not answer (a cluster without accounting?): the sweep learns its "
    "jobs' ends from squeue, without Slurm's final states"
)


def install() -> None:
    """This process's sweeps launch with ``SlurmLauncher`` where their config names the
    plugin's (``hydra/launcher=slurm`` or ``submitit_slurm``)."""
    hydra_adapter.instantiate_in_place(submitit_launcher.SlurmLauncher, SlurmLauncher)


class SlurmLauncher(submitit_launcher.SlurmLauncher):
    """The plugin's Slurm launcher (the same settings), with its own wait for the jobs."""

    def launch(
        self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int
    ) -> list[JobReturn]:
        since_ms = int(time.time() * 1000)
        jobs = hydra_adapter.submit_slurm_jobs(self, job_overrides, initial_job_idx)
        parent = parent_run.parent_from(self.config.hydra.job.env_set)
        waiting = Waiting(jobs, job_overrides, initial_job_idx, parent, since_ms)
        with stopping.on_stop(waiting.cancel):
            try:
                return waiting.results()
            except BaseException:  # a stop, or a job's error: none of its jobs is left behind
                waiting.cancel()
                raise


class Waiting:
    """A sweep's Slurm jobs (submitit's), waited for: their returns, in order."""

    def __init__(
        self,
        jobs: list,
        overrides: Sequence[Sequence[str]],
        first: int,
        parent: parent_run.Parent | None,
        since_ms: int,
    ) -> None:
        self.jobs, self.overrides, self.first = jobs, overrides, first
        self.parent, self.since_ms = parent, since_ms
        self.returns: dict[int, JobReturn] = {}
        self.out_of_queue: dict[int, float] = {}  # job index -> when first seen out of it
        self.warned = False  # NO_ACCOUNTING said

    def pending(self) -> list[tuple[int, object]]:
        return [(i, job) for i, job in enumerate(self.jobs) if i not in self.returns]

    def cancel(self) -> None:
        slurm.cancel([job.job_id for _, job in self.pending()])

    def results(self) -> list[JobReturn]:
        """Until every job has returned or left the queue without a result."""
        next_queue_check = time.monotonic()
        while self.pending():
            for i, job in self.pending():
                if has_result(job):
                    self.returns[i] = job.results()[0]  # a job's error is raised here
            if self.pending() and time.monotonic() >= next_queue_check:
                self.check_queue()
                next_queue_check = time.monotonic() + QUEUE_POLL_SECONDS
            if self.pending():
                time.sleep(RESULT_POLL_SECONDS)
        return [self.returns[i] for i in range(len(self.jobs))]

    def check_queue(self) -> None:
        """The jobs out of the queue for RESULT_GRACE_SECONDS without a result: ended."""
        queued = slurm.queued_jobs()
        if queued is None:  # squeue did not answer: asked again at the next check
            return
        now = time.monotonic()
        for i, job in self.pending():
            if job.job_id in queued:
                continue
            out_since = self.out_of_queue.setdefault(i, now)
            if now - out_since >= RESULT_GRACE_SECONDS and not has_result(job):
                self.returns[i] = self.ended_without_result(i, job.job_id)

    def ended_without_result(self, i: int, job_id: str) -> JobReturn:
        """Say so in one line (its run's end, if the job left it RUNNING, recorded): the
        job returns nothing, as a stopped job does."""
        state = slurm.accounted_state(job_id)
        if state is None and not self.warned:
            print(NO_ACCOUNTING, file=sys.stderr, flush=True)
            self.warned = True
        why = f"its Slurm job {job_id} ended without a result" + (f" ({state})" if state else "")
        number = self.first + i
        if self.parent:
            line = parent_run.end_job_without_result(self.parent, number, self.since_ms, why)
            print(line, flush=True)
        else:
            print(f"[job {number + 1}] {why}", flush=True)
        ended = JobReturn(overrides=list(self.overrides[i]))
        ended.status, ended.return_value = JobStatus.COMPLETED, None
        return ended


def has_result(job) -> bool:
    """Whether the job's result file is there, the folder refreshed first as submitit does
    (a shared filesystem's cache may hide a new file)."""
    folder = job.paths.folder
    with contextlib.suppress(OSError):
        folder.chmod(folder.stat().st_mode)
    return job.paths.result_pickle.exists()
