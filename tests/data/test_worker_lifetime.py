"""Input worker processes never outlive their trainer, even one killed with SIGKILL."""

import os
import select
import signal
import subprocess
import sys
import time

import pytest

# A stand-in trainer: two grain workers feeding a slow consumer that never finishes by itself.
TRAINER = """
import sys, time
from absl import flags
flags.FLAGS.mark_as_parsed()  # as under absl.app.run; grain reads flags in its workers
from xrayjax.data import pipelines, sources, transforms

table = sources.open_table("phantom_forearm_clean", "train", sys.argv[1])
pre = transforms.Preprocess(image_size=12, load_size=14)
it = pipelines.train_iterator(table, pre, global_batch=4, seed=0, workers=2, process_index=0,
                              process_count=1)
next(it)
print("ready", flush=True)
while True:
    next(it)
    time.sleep(0.2)
"""


def _stat(pid: int) -> tuple[str, int, int] | None:
    """(state, ppid, start time) of a process from /proc, None once it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            # The command name may hold spaces and parentheses; the fields follow the last ')'.
            fields = f.read().rpartition(")")[2].split()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return fields[0], int(fields[1]), int(fields[19])


def _descendants(root: int) -> set[tuple[int, int]]:
    """(pid, start time) of every process below `root`: children, their children, and so on."""
    children: dict[int, list[tuple[int, int]]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (stat := _stat(int(entry))) is not None:
            children.setdefault(stat[1], []).append((int(entry), stat[2]))
    found, todo = set(), [root]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child[0])
    return found


def _alive(process: tuple[int, int]) -> bool:
    """Whether the process still runs (not a zombie, and its pid not reused since)."""
    stat = _stat(process[0])
    return stat is not None and stat[0] != "Z" and stat[2] == process[1]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_workers_exit_when_trainer_is_killed(phantom_data_dir):
    trainer = subprocess.Popen(
        [sys.executable, "-c", TRAINER, str(phantom_data_dir)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))),
    )
    spawned: set[tuple[int, int]] = set()
    try:
        # A bound on the wait, so a trainer that hangs fails the test instead of stalling it.
        assert select.select([trainer.stdout], [], [], 120)[0], "the trainer did not start"
        assert trainer.stdout.readline().strip() == "ready", "the trainer did not start"
        spawned = _descendants(trainer.pid)
        # Two workers, and multiprocessing's resource tracker.
        assert len(spawned) >= 3, spawned
        trainer.send_signal(signal.SIGKILL)
        trainer.wait()
        deadline = time.monotonic() + 10
        while (left := {p for p in spawned if _alive(p)}) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not left, f"still alive 10 s after the trainer died: {sorted(p for p, _ in left)}"
    finally:
        # A failing run must not leave orphans behind either.
        trainer.kill()
        trainer.wait()
        for process in spawned:
            if _alive(process):
                os.kill(process[0], signal.SIGKILL)
