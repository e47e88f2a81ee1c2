"""Slurm's commands, as a job running on it and as the launcher of a sweep's jobs use them.

A job: why Slurm is ending it (``stop_reason``). Slurm ends a job with SIGTERM (then SIGKILL
after its KillWait) both at its time limit and on ``scancel``; only the queue tells them
apart, while the job completes.

The launcher: which of its jobs are still in the queue (``queued_jobs``), Slurm's record of
one that left it (``accounted_state``: ``sacct``, which fails on a cluster without
accounting), and ``cancel``.
"""

import os
import subprocess

TIME_LIMIT = "Slurm time limit"
CANCELLED = "cancelled by Slurm (scancel)"
QUEUE_SECONDS = 10.0  # how long a Slurm command gets to answer (a job: SIGKILL comes 30 s after)


def stop_reason() -> str | None:
    """Why Slurm is ending the job this process runs in (after its SIGTERM): ``TIME_LIMIT``,
    ``CANCELLED`` or Slurm's own reason; None outside Slurm, when Slurm is not ending the
    job (the stop came from elsewhere), or when squeue does not answer."""
    job_id = os.environ.get("SLURM_JOB_ID")
    if not job_id:
        return None
    queue = answer("squeue", "--noheader", f"--jobs={job_id}", "--format=%A %T %r")
    if queue is None:
        return None
    # an array's first job id also names the whole array: this job's line is its own id's
    rows = [line.split(" ", 2) for line in queue.splitlines()]
    states = {row[0]: row[1:] for row in rows if len(row) == 3}
    state, reason = states.get(job_id, ("", ""))
    if state != "COMPLETING":
        return None
    if reason == "TimeLimit":
        return TIME_LIMIT
    return CANCELLED if reason == "None" else f"ended by Slurm ({reason})"


def answer(*command: str) -> str | None:
    """A Slurm command's output; None if it fails or does not answer in QUEUE_SECONDS."""
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=QUEUE_SECONDS)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout if done.returncode == 0 else None


def queued_jobs() -> set[str] | None:
    """The ids of this user's jobs in Slurm's queue (pending, running or completing), an
    array's jobs one by one (``12_0``, as submitit names them); None if squeue fails."""
    queue = answer("squeue", "--me", "--array", "--noheader", "--format=%i")
    return None if queue is None else set(queue.split())


def accounted_state(job_id: str) -> str | None:
    """Slurm's final state of a job that left the queue (``CANCELLED by 0``, ``TIMEOUT``,
    ``OUT_OF_MEMORY``...), from its accounting; None where ``sacct`` fails (no accounting)."""
    record = answer(
        "sacct", "--noheader", "--parsable2", "--allocations", "--format=State", f"--jobs={job_id}"
    )
    return (record or "").partition("\n")[0].strip() or None


def cancel(job_ids: list[str]) -> None:
    """``scancel`` the jobs, those that have left the queue already ignored."""
    if job_ids:
        answer("scancel", *job_ids)
