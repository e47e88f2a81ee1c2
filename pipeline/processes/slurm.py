"""Slurm as a job running on it sees it: why Slurm is ending this job.

Slurm ends a job with SIGTERM (then SIGKILL after its KillWait) both at its time limit and
on ``scancel``; only the queue tells them apart, while the job completes.
"""

import os
import subprocess

TIME_LIMIT = "Slurm time limit"
CANCELLED = "cancelled by Slurm (scancel)"
QUEUE_SECONDS = 10.0  # how long squeue gets to answer: Slurm's SIGKILL comes 30 s after


def stop_reason() -> str | None:
    """Why Slurm is ending the job this process runs in (after its SIGTERM): ``TIME_LIMIT``,
    ``CANCELLED`` or Slurm's own reason; None outside Slurm, when Slurm is not ending the
    job (the stop came from elsewhere), or when squeue does not answer."""
    job_id = os.environ.get("SLURM_JOB_ID")
    if not job_id:
        return None
    try:
        done = subprocess.run(
            ["squeue", "--noheader", f"--jobs={job_id}", "--format=%A %T %r"],
            capture_output=True,
            text=True,
            timeout=QUEUE_SECONDS,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    # an array's first job id also names the whole array: this job's line is its own id's
    rows = [line.split(" ", 2) for line in done.stdout.splitlines()]
    states = {row[0]: row[1:] for row in rows if len(row) == 3}
    state, reason = states.get(job_id, ("", ""))
    if state != "COMPLETING":
        return None
    if reason == "TimeLimit":
        return TIME_LIMIT
    return CANCELLED if reason == "None" else f"ended by Slurm ({reason})"
