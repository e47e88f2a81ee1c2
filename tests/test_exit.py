"""How the command-line processes exit: every atexit handler runs, then no final collection."""

import subprocess
import sys
import textwrap

from tests.helpers import ROOT

EXIT_ORDER = textwrap.dedent("""
    import atexit, gc
    atexit.register(lambda: print("frozen" if gc.get_freeze_count() else "not frozen"))
    from pipeline.cli import skip_final_collection
    skip_final_collection()
    skip_final_collection()  # asking twice is harmless
    atexit.register(lambda: print("frozen" if gc.get_freeze_count() else "not frozen"))
""")


def test_the_heap_is_frozen_only_after_the_handlers_registered_later():
    command = [sys.executable, "-c", EXIT_ORDER]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=True)
    # atexit runs last-registered first: the later handler sees nothing frozen yet
    assert done.stdout.split("\n")[:2] == ["not frozen", "frozen"]
