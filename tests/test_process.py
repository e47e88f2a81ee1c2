"""Process settings: only entry points make them, and each does what it says."""

import os
import signal
import subprocess
import sys
import textwrap

import pytest

from pipeline.processes import entry, stopping, workers
from pipeline.processes.errors import InputError
from tests.helpers import ROOT

EXIT_ORDER = textwrap.dedent("""
    import atexit, gc
    atexit.register(lambda: print("frozen" if gc.get_freeze_count() else "not frozen"))
    from pipeline.processes.settings import skip_final_collection
    skip_final_collection()
    skip_final_collection()  # asking twice is harmless
    atexit.register(lambda: print("frozen" if gc.get_freeze_count() else "not frozen"))
""")


def python(code: str, *args: str) -> str:
    command = [sys.executable, "-c", code, *args]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=True).stdout


def test_the_heap_is_frozen_only_after_the_handlers_registered_later():
    # atexit runs last-registered first: the later handler sees nothing frozen yet
    assert python(EXIT_ORDER).split("\n")[:2] == ["not frozen", "frozen"]


# Frees three 10 MB arrays, then counts the page faults of allocating them again.
REALLOCATION_FAULTS = textwrap.dedent("""
    import resource, sys
    import numpy as np
    from pipeline.processes.settings import keep_freed_memory
    if sys.argv[1] == "keep":
        keep_freed_memory()
    for round in range(2):
        if round == 1:
            before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        arrays = [np.ones((64, 20_000)) for _ in range(3)]
        del arrays
    print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
""")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator")
def test_keep_freed_memory_stops_reallocations_from_page_faulting():
    default = int(python(REALLOCATION_FAULTS, "default"))  # ~1,500: memory given back
    if default < 100:  # e.g. huge pages fault 2 MB at a time: nothing to save
        pytest.skip(f"only {default} page faults without keep_freed_memory")
    assert int(python(REALLOCATION_FAULTS, "keep")) < default / 20


# Trains and tracks a job the way a notebook would, then reports what was tuned.
LIBRARY_USE = textwrap.dedent("""
    import atexit, gc, os, sys
    from hydra import compose, initialize_config_dir
    from pipeline.job import config
    from pipeline.processes import settings
    from pipeline.job.run import run_job
    config.register()
    with initialize_config_dir(config_dir=sys.argv[1], version_base="1.3"):
        cfg = compose("config", overrides=[f"tracking.uri={sys.argv[2]}", "train=quick"])
    run_job(cfg)
    tuned = [f.__name__ for f in (settings.keep_freed_memory, settings.skip_final_collection)
             if f.cache_info().currsize]
    http = sorted(k for k in settings.SERVER_TIMEOUTS if k in os.environ)
    atexit.register(lambda: print("tuned:", tuned, "frozen:", gc.get_freeze_count() > 0, http))
""")


def test_library_code_leaves_the_process_as_it_was(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert python(LIBRARY_USE, str(ROOT / "conf"), uri).strip() == "tuned: [] frozen: False []"


# What an entry point leaves in the environment for MLflow's HTTP client and libpq.
HTTP_SETTINGS = textwrap.dedent("""
    import os
    from pipeline.processes import settings
    os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] = "60"  # the user's own
    settings.tune_for_jobs()
    print(*(os.environ[k] for k in sorted(settings.SERVER_TIMEOUTS)))
""")


def test_entry_points_bound_mlflows_http_retries_but_the_user_wins():
    # sorted: BACKOFF_FACTOR, MAX_RETRIES, TIMEOUT, then PGCONNECT_TIMEOUT
    assert python(HTTP_SETTINGS).split() == ["1", "2", "60", "5"]


def test_an_entry_point_says_a_users_mistake_in_one_line_and_keeps_any_other_error(capsys):
    errors = {
        "input": InputError("no such run"),
        "explained": LookupError("a key"),  # a higher layer's error, which it explains
        "ctrl-c": KeyboardInterrupt(),
        "sigterm": stopping.Terminated("SIGTERM"),
        "bug": ZeroDivisionError("a bug"),
    }

    @entry.point(lambda error: f"explained: {error}" if isinstance(error, LookupError) else None)
    def main(argv: list[str] | None = None) -> int:
        raise errors[argv[0]]

    expected = [
        ("input", 2, "error: no such run\n"),
        ("explained", 2, "error: explained: a key\n"),
        ("ctrl-c", 130, ""),
        ("sigterm", 143, ""),
    ]
    for name, code, line in expected:
        assert (main([name]), capsys.readouterr().err) == (code, line), name
    with pytest.raises(ZeroDivisionError):  # its traceback, not a line that hides a bug
        main(["bug"])


def test_an_error_a_stop_caused_ends_as_the_stop_not_as_a_mistake(capsys, monkeypatch):
    """A SIGTERM in the middle of a library's update (OmegaConf's, as a sweep's jobs are
    checked) can make its cleanup fail, and that error replaces the KeyboardInterrupt: exit
    143 all the same, no line."""

    @entry.point(lambda error: f"explained: {error}")
    def main(argv: list[str] | None = None) -> int:
        raise AttributeError("'NoneType' object has no attribute '_invalidate_flags_cache'")

    assert main([]) == 2 and capsys.readouterr().err.startswith("error: explained: ")
    monkeypatch.setattr(workers.state, "stopped_by", signal.SIGTERM)
    assert (main([]), capsys.readouterr().err) == (143, "")


def test_a_stop_inside_code_run_by_exec_is_not_left_unhandled():
    """CPython 3.11 marks a KeyboardInterrupt that escapes ``exec`` of a string (dataclasses
    makes its methods so) as unhandled though it was handled, and the process may then end by
    SIGINT, not 130 (a search stopped as it checks its corners: returncode -2, no line, about
    once in 15 under load): the entry wrapper clears the mark."""
    import ctypes

    try:
        mark = ctypes.c_int.in_dll(ctypes.pythonapi, "_Py_UnhandledKeyboardInterrupt")
    except ValueError:
        pytest.skip("not CPython 3.11's mark")

    @entry.point()
    def main(argv: list[str] | None = None) -> int:
        exec("raise KeyboardInterrupt")  # as Ctrl-C lands while dataclasses makes a method

    assert main([]) == 130 and mark.value == 0


def test_a_cursor_our_stop_interrupted_is_not_logged_with_a_traceback(tmp_path, caplog):
    """A SIGTERM raised in the middle of SQLAlchemy's fetch (a search's stop) made it log
    "Error closing cursor" with two tracebacks; any other such error is still logged."""
    import sqlite3

    import sqlalchemy

    from pipeline.processes import settings

    settings.quiet_database_errors()
    engine = sqlalchemy.create_engine(f"sqlite:///{tmp_path / 'store.db'}")
    with engine.connect() as connection:
        for stopped in (True, False):
            raw = sqlite3.connect(tmp_path / "store.db")  # a connection of its own
            cursor = raw.cursor()
            raw.close()  # closing its cursor now fails: "Cannot operate on a closed database"
            caplog.clear()
            try:
                if stopped:
                    raise KeyboardInterrupt
                connection._safe_close_cursor(cursor)
            except KeyboardInterrupt:
                connection._safe_close_cursor(cursor)
            logged = [r.getMessage() for r in caplog.records]
            assert ("Error closing cursor" in logged) is not stopped, logged


def test_the_death_watch_names_the_first_child_to_die_though_it_reads_them_all_at_once():
    """As when loky kills the other workers before the watcher's thread runs: the deaths are
    read once, after all of them (by ``first_dead``), and still come in the order the
    children died."""
    children = [subprocess.Popen(["sleep", "60"]) for _ in range(4)]
    watch = workers.DeathWatch()
    watch.watch_new_children()
    dying = [children[2], children[0], children[3], children[1]]  # not the order watched in
    for child in dying:
        child.kill()
        os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)  # exited, not yet reaped
    assert watch.first_dead() == children[2].pid
    assert watch.deaths == [child.pid for child in dying]
    watch.close()
    for child in children:
        child.wait()  # reaped
