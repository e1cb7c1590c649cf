"""A worker process killed in the middle of a task, on a local two-node Ray cluster: the
task is run again and its output is complete (its own module: it needs its own cluster,
not the single local instance of ``test_cluster.py``)."""

import os
import signal
import threading
import time
from pathlib import Path

import pytest

from lrrtool import cluster

# One xdist worker runs every Ray test: two local Ray instances at once would compete.
pytestmark = pytest.mark.xdist_group("ray")

ray = pytest.importorskip("ray", reason="the ray extra is not installed (pip install -e '.[ray]')")


def test_a_killed_worker_is_retried_on_a_two_node_cluster(tmp_path):
    from ray.cluster_utils import Cluster

    nodes = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    nodes.add_node(num_cpus=1)
    ray.init(address=nodes.address, logging_level="ERROR", configure_logging=False)
    try:
        assert len([n for n in ray.nodes() if n["Alive"]]) == 2
        marker = tmp_path / "first.pid"

        def work(path: Path, target: Path) -> dict:  # local: pickled by value for the workers
            if not marker.exists():  # the first attempt waits to be killed
                marker.write_text(str(os.getpid()))
                time.sleep(60)
            target.write_text(path.read_text() * 2)
            return {"input": str(path), "pid": os.getpid(), "node": ray.get_runtime_context().get_node_id()}

        def kill_first_worker() -> None:
            while not marker.exists() or not marker.read_text():
                time.sleep(0.05)
            os.kill(int(marker.read_text()), signal.SIGKILL)

        killer = threading.Thread(target=kill_first_worker, daemon=True)
        killer.start()
        (tmp_path / "in.txt").write_text("data")
        outcomes = {}
        jobs = [(tmp_path / "in.txt", tmp_path / "out.txt")]
        cluster.run_tasks(ray, jobs, work, threads=1, gpus=0, finished=lambda k, o: outcomes.update({k: o}))
        killer.join(timeout=5)
        entry, error = outcomes[0]
        assert error is None, error
        assert (tmp_path / "out.txt").read_text() == "datadata"
        assert entry["pid"] != int(marker.read_text())
    finally:
        ray.shutdown()
        nodes.shutdown()


def test_ctrl_c_stops_a_ray_batch_with_exit_130_and_no_output(tmp_path):
    """SIGINT to ``lrrtool denoise --ray`` while its tasks run (each takes about 20 s):
    exit code 130 within seconds, no output file and no temporary file."""
    import subprocess
    import sys

    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for k in range(2):
        noisy = 128 + rng.normal(0, 40, (256, 256, 3))
        Image.fromarray(noisy.clip(0, 255).astype(np.uint8)).save(tmp_path / f"n{k}.png")
    out = tmp_path / "out"
    _wait_for_earlier_ray_to_end()
    command = [sys.executable, "-m", "lrrtool", "denoise", str(tmp_path / "n*.png"), "--output-dir", str(out)]
    process = subprocess.Popen([*command, "--ray", "--sigma", "40", "-q"], stderr=subprocess.PIPE, text=True)
    waited = time.perf_counter()
    while not _tasks_running() and time.perf_counter() - waited < 20:  # Ray started, a task running
        time.sleep(0.2)
    time.sleep(1)
    assert process.poll() is None, process.stderr.read()
    sent = time.perf_counter()
    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=30) == 130
    assert time.perf_counter() - sent < 15
    assert "interrupted" in process.stderr.read()
    assert not out.exists() or not list(out.iterdir())


def _ray_processes(marks: tuple[bytes, ...]) -> list[int]:
    """Processes whose command line holds one of ``marks``."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and any(m in (entry / "cmdline").read_bytes() for m in marks):
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def _tasks_running() -> bool:
    """Whether a Ray worker runs a task of lrrtool's (Ray names its process after it)."""
    return bool(_ray_processes((b"ray::_run_one",)))


def _wait_for_earlier_ray_to_end(timeout: float = 15) -> None:
    """The test before's cluster is shut down, but on a busy machine its processes may
    outlive it: its workers would pass for this test's running tasks, and its ports and
    files could fail the CLI's own Ray (this test saw the CLI gone before its interrupt
    twice in full runs, never alone; which of the two it was is not known)."""
    waited = time.perf_counter()
    while _ray_processes((b"raylet", b"gcs_server", b"ray::")) and time.perf_counter() - waited < timeout:
        time.sleep(0.2)
