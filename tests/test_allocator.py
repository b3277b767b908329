"""allocator.keep_freed_memory: freed large blocks are reused instead of page-faulted in again."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

from alisnet_export.allocator import ENV_VAR

# Allocate, touch and free a 64 MB tensor 20 times; print the minor page faults it cost. The heap grows over the
# first few (measured: up to 8 of them still fault); counted from the 11th on.
_CHURN = """
import resource, torch
from alisnet_export.allocator import keep_freed_memory
print(keep_freed_memory())
for _ in range(10):
    torch.empty(16 * 2**20).fill_(1.0)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    torch.empty(16 * 2**20).fill_(1.0)
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _churn(setting: str) -> tuple[bool, int]:
    env = {**os.environ, ENV_VAR: setting}
    out = subprocess.run([sys.executable, "-c", _CHURN], env=env, capture_output=True, text=True, check=True)
    applied, faults = out.stdout.split()
    return applied == "True", int(faults)


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
                    reason="keep_freed_memory tunes glibc's malloc; elsewhere it does nothing")
def test_freed_blocks_are_reused_instead_of_faulted_in_again():
    applied, faults = _churn("")
    untouched, system_faults = _churn("system")
    assert applied and not untouched
    # glibc's default maps and unmaps each 64 MB block: every one faults in again (16384 pages each here, fewer
    # where transparent huge pages are always on); kept memory is reused
    assert system_faults >= 20
    assert faults < 0.05 * system_faults
