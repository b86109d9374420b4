"""engine/allocator.py: after keep_freed_memory(), a large array freed and allocated again reuses the
same pages (no page faults on the second touch); without it, glibc maps fresh pages each time."""
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(not hasattr(os, "confstr") or not os.confstr("CS_GNU_LIBC_VERSION"),
                                reason="glibc's malloc only")

TOUCH_TWICE = """
import resource, sys
import numpy as np
from minispanbert.engine.allocator import keep_freed_memory
if sys.argv[1] == "keep":
    assert keep_freed_memory()
def touch():  # a 64 MiB array written once and freed, as a step's vocabulary-sized gradient is
    a = np.empty(1 << 24, dtype=np.float32)
    a.fill(1.0)
touch()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
touch()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def page_faults_of_second_touch(mode: str) -> int:
    done = subprocess.run([sys.executable, "-c", TOUCH_TWICE, mode], capture_output=True, text=True, check=True)
    return int(done.stdout)


def test_freed_memory_is_reused_without_page_faults():
    huge_pages = (1 << 24) * 4 // (2 << 20)  # NumPy asks for 2 MiB pages for large arrays where it can
    assert page_faults_of_second_touch("default") >= huge_pages  # the baseline this is about: fresh pages
    assert page_faults_of_second_touch("keep") < 8
