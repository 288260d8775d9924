"""mlstm4reco.allocator: freed memory kept for reuse, so that a batch's large tensors
do not fault their pages in again (each case in a process of its own: the setting is
process-wide)."""

import json
import os
import subprocess
import sys

import pytest
from conftest import ROOT

PROBE = """
import json, resource
import torch
from mlstm4reco import allocator

on = allocator.keep_freed_memory()

def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt

def batch():  # a batch's large temporaries: 64 MiB and 16 MiB, touched, then freed
    scores, states = torch.ones(16 << 20), torch.ones(4 << 20)
    return float((scores[: 4 << 20] * states)[0])

for _ in range(4):  # the heap grows to the batch's needs
    batch()
before = faults()
for _ in range(4):
    batch()
print(json.dumps(dict(on=on, kept=allocator.keeping_freed_memory(), faults=faults() - before)))
"""


def _probe(keep: str) -> dict:
    env = {**os.environ, "MLSTM4RECO_KEEP_MEMORY": keep, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc only")
def test_kept_memory_is_reused_without_faulting_its_pages_in_again():
    kept, released = _probe("1"), _probe("0")
    assert kept["on"] and kept["kept"]
    assert not released["on"] and not released["kept"]
    if released["faults"] < 4 * 4096:  # 4 x (64 + 16 + 16) MiB in 4 KiB pages: 98,304
        pytest.skip("fresh allocations barely fault here (huge pages?): nothing to compare")
    assert kept["faults"] * 20 < released["faults"]
