"""One parent-run lifecycle for grid sweeps and searches (pipeline.sweeps.parent_run), in
process, on real SQLite stores: what a creation that fails leaves, the one recorded-overrides
check, and a parent shared by a search's processes, which only the last one ends."""

import pytest

from pipeline.processes.errors import InputError
from pipeline.store import tables, tracking
from pipeline.sweeps import parent_run


def new_parent(client, record=None) -> parent_run.Parent:
    experiment = tracking.experiment_id(client, "lifecycle")
    return parent_run.create(
        client, experiment, "p", ["model.depth=1,2"], "model.depth", {"depth": "1,2"}, record=record
    )


@pytest.mark.parametrize(
    ("error", "status"), [(OSError("no space"), "FAILED"), (KeyboardInterrupt(), "KILLED")]
)
def test_a_parent_whose_creation_fails_midway_is_not_left_running(store, error, status):
    """A grid sweep's parent was left RUNNING when writing its job list failed or was
    stopped (a search's ended FAILED or KILLED: now both do)."""
    uri, _ = store
    client = tracking.connect(uri)

    def record(run_id: str) -> None:
        raise error

    with pytest.raises(type(error)):
        new_parent(client, record)
    (parent,) = client.search_runs([tracking.experiment_id(client, "lifecycle")])
    assert parent.info.status == status


def test_a_resume_or_a_join_keeps_the_overrides_it_recorded():
    recorded = ["model.depth=1,2", "train=quick"]
    assert parent_run.keep_recorded("s", recorded, ["train=quick"]) == recorded
    per_process = ["search.n_trials=3"]  # a search's process may change these
    assert parent_run.keep_recorded("s", recorded, per_process, per_process) == [
        *recorded,
        *per_process,
    ]
    with pytest.raises(InputError, match=r"^s runs with the overrides it recorded: drop seed=3$"):
        parent_run.keep_recorded(
            "s", recorded, ["train=quick", "seed=3", *per_process], per_process
        )


def test_a_parent_others_work_on_is_joined_and_only_the_last_process_ends_it(store, capsys):
    uri, _ = store
    client = tracking.connect(uri)
    parent = new_parent(client)
    experiment = parent.experiment_id
    other = {tables.LAUNCHER_TAG: "elsewhere:1"}
    mine = {tables.LAUNCHER_TAG: tables.launcher_id()}
    theirs, ours = (
        tracking.start_run(client, experiment, name, tags, parent.run_id)
        for name, tags in (("theirs", other), ("ours", mine))
    )
    reopened = []
    run = client.get_run(parent.run_id)
    parent_run.join(client, run, ["elsewhere:1"], on_reopen=lambda: reopened.append(1))
    assert not reopened and tracking.is_running(client, theirs)  # joined as it was

    parent_run.finish(parent, "FINISHED", 1.0, others=["elsewhere:1"])
    assert "the search goes on in elsewhere:1" in capsys.readouterr().out
    assert client.get_run(ours).info.status == "KILLED"  # this process's job only
    assert tracking.is_running(client, theirs) and tracking.is_running(client, parent.run_id)

    parent_run.abandon(parent, "died", theirs, others=["another:2"])
    assert tracking.is_running(client, parent.run_id)  # another process still works on it
    parent_run.abandon(parent, "died")
    ended = client.get_run(parent.run_id)
    assert ended.info.status == "KILLED" and ended.data.tags["killed_reason"] == "died"

    parent_run.join(client, ended, ["elsewhere:1"], on_reopen=lambda: reopened.append(1))
    assert reopened and tracking.is_running(client, parent.run_id)  # ended: reopened
    parent_run.finish(parent, "FINISHED", 1.0)
    assert client.get_run(parent.run_id).info.status == "FINISHED"


def test_a_sweep_whose_page_fails_still_ends_with_its_outcome(store, capsys, monkeypatch):
    """The page is an extra: an error while building it is one warning line, and the parent
    still gets its summary and ends FINISHED (it was left RUNNING)."""
    uri, _ = store
    client = tracking.connect(uri)
    parent = new_parent(client)

    def broken(*args, **kwargs):
        raise ValueError("no figure today\nsecond line")

    monkeypatch.setattr(parent_run.page, "findings", broken)
    parent_run.finish(parent, "FINISHED", 1.0)
    assert client.get_run(parent.run_id).info.status == "FINISHED"
    out = capsys.readouterr().out
    assert "warning: the sweep's page was not recorded: no figure today\n" in out
