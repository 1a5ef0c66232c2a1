"""The slurm executor against a real single-node Slurm cluster (scripts/slurm_up.sh).

The cluster tests skip, with the reason shown by `pytest -ra`, when no cluster can be brought
up (not root, no apt, no network for the packages). The tests that need no cluster (missing
commands, a controller that does not answer, the sbatch argument rules) always run.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any, Dict, List

import pytest
from conftest import REPO, Orch, assert_gone, run_id_of, wait_for

from orch.model import SlurmOptions
from orch.slurm import WRAPPER, job_name, output_pattern, sbatch_options

pytestmark = pytest.mark.slurm

_UP: Dict[str, str] = {}


@pytest.fixture(scope="module")
def cluster() -> str:
    """Bring the cluster up once for the module (idempotent, ~2 s when it is up already)."""
    if "error" not in _UP and "node" not in _UP:
        try:
            done = subprocess.run(
                ["bash", str(REPO / "scripts" / "slurm_up.sh")],
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=600,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as err:
            _UP["error"] = str(err)
        else:
            if done.returncode == 0:
                _UP["node"] = done.stdout.strip()
            else:
                _UP["error"] = (done.stderr or done.stdout).strip().splitlines()[-1:][0]
    if "error" in _UP:
        pytest.skip(f"no Slurm cluster (scripts/slurm_up.sh: {_UP['error']})")
    return _UP["node"]


@pytest.fixture
def sorch(tmp_path: Path) -> Orch:
    # A '%' and a space in every path orch hands to sbatch: --output must take them literally.
    workdir = tmp_path / "w %j"
    workdir.mkdir()
    return Orch(workdir)


def _squeue(job_id: str) -> str:
    """The job's state as squeue -t all shows it ("" once purged)."""
    out = subprocess.run(
        ["squeue", "-h", "-t", "all", "-o", "%T", "-j", job_id],
        capture_output=True,
        text=True,
        check=False,
    )
    return out.stdout.strip()


def _job_ended(job_id: str) -> bool:
    return _squeue(job_id) in ("", "COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL")


def _job_pids(job_id: str) -> List[int]:
    """The job's processes, found by their environment (this machine is the node)."""
    pids = []
    for name in os.listdir("/proc"):
        try:
            environ = Path(f"/proc/{name}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if name.isdigit() and f"SLURM_JOB_ID={job_id}".encode() in environ:
            pids.append(int(name))
    return pids


def _lines(path: Path) -> List[str]:
    return path.read_text().splitlines() if path.exists() else []


def _attempts(state: Dict[str, Any], task_id: str) -> List[Dict[str, Any]]:
    return list(state["tasks"][task_id]["history"])


# --------------------------------------------------------------------------- no cluster needed


def test_sbatch_arguments() -> None:
    assert output_pattern("/h/w %j/logs/a.out.log") == "/h/w %%j/logs/a.out.log"
    # With a backslash Slurm replaces nothing, and "\\" is one backslash (verified on 22.05).
    assert output_pattern("/h/a%b\\c/x.log") == "/h/a%b\\\\c/x.log"
    options = SlurmOptions("debug", "proj", 2, 4096, 60, "gpu:1", ("--qos=high", "-N", "1"))
    assert sbatch_options(options) == [
        "--partition=debug",
        "--account=proj",
        "--cpus-per-task=2",
        "--mem=4096M",
        "--time=60",
        "--gres=gpu:1",
        "--qos=high",
        "-N",
        "1",
    ]
    assert sbatch_options(None) == [] and sbatch_options(SlurmOptions()) == []
    assert job_name("20260101_120000_0a1b2c", "build.x-1", 3) == (
        "orch-20260101_120000_0a1b2c-build.x-1-3"
    )


@pytest.mark.skipif(shutil.which("setsid") is None, reason="no setsid (util-linux) here")
def test_wrapper_reports_the_commands_real_exit_code(tmp_path: Path) -> None:
    """The batch script alone, as slurmstepd runs it: exit code, start marker, start error."""
    script = tmp_path / "wrapper.sh"
    script.write_text(WRAPPER)
    err = tmp_path / "err.log"
    for name, argv, code in (
        ("ok", ["true"], "0"),
        ("four", ["sh", "-c", "echo e >&2; exit 4"], "4"),
        ("term", ["sh", "-c", "kill -TERM $$"], "143"),
        ("ghost", ["no-such-program-here"], "start_error"),
    ):
        stem = tmp_path / name
        subprocess.run(["sh", str(script), str(stem), str(err), *argv], check=False)
        assert (tmp_path / f"{name}.exit").read_text().strip() == code
        assert (tmp_path / f"{name}.run").exists()
    assert err.read_text() == "e\n"  # the command's stderr, appended to the task's log


def test_missing_slurm_commands_exit_2_and_create_nothing(tmp_path: Path) -> None:
    orch = Orch(tmp_path)
    orch.plan(
        """
        executor: slurm
        tasks: [{id: a, cmd: ["/bin/sh", "-c", "echo a > a.txt"]}]
        """
    )
    empty = tmp_path / "bin"
    empty.mkdir()
    env = {"PATH": str(empty)}
    done = orch.run("run", "plan.yaml", env=env)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines() == [
        "executor slurm: sbatch, squeue, scancel, scontrol not found on PATH; install the "
        "Slurm client commands or use --executor local"
    ]
    assert done.stdout == "" and not orch.home.exists() and not (tmp_path / "a.txt").exists()
    # The plan's executor is overridden by --executor, in both directions.
    local = orch.run("run", "plan.yaml", "--executor", "local", env=env)
    assert local.returncode == 0, local.stderr
    run_id = run_id_of(local.stdout)
    assert orch.state(run_id)["executor"] == "local"
    orch.plan("tasks: [{id: a, cmd: [/bin/true]}]\n", "local.yaml")
    again = orch.run("run", "local.yaml", "--executor", "slurm", env=env)
    assert again.returncode == 2 and "not found on PATH" in again.stderr
    resumed = orch.run("resume", run_id, "--executor", "slurm", env=env)
    assert resumed.returncode == 2 and "not found on PATH" in resumed.stderr


# --------------------------------------------------------------------------- on the cluster


def test_controller_down_exit_2(cluster: str, tmp_path: Path) -> None:
    # A copy of the config whose controller port nobody listens on: `scontrol ping` says DOWN
    # at once (sinfo or sbatch would retry for MessageTimeout first).
    conf = Path("/etc/slurm/slurm.conf").read_text()
    bad = tmp_path / "slurm.conf"
    bad.write_text(conf + "SlurmctldPort=6999\n")
    orch = Orch(tmp_path)
    orch.plan("executor: slurm\ntasks: [{id: a, cmd: [/bin/true]}]\n")
    done = orch.run("run", "plan.yaml", env={"SLURM_CONF": str(bad)})
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "executor slurm: the Slurm controller does not answer (scontrol ping: "
        f"Slurmctld(primary) at {cluster.split()[2]} is DOWN)"
    ]
    assert not orch.home.exists()


SHOW_JOB = "scontrol show job $SLURM_JOB_ID | tr ' ' '\\n' | grep -E '^(Comment|MinMem|TimeLimit)'"
READ_CONTEXT = (
    "import json, os; print(sorted(json.load(open(os.environ['ORCH_CONTEXT']))['dependencies']))"
)
DAG = f"""
executor: slurm
tasks:
  - id: make
    cmd: ["sh", "-c", "echo made > made.txt; echo 'make: 100%'; echo to-stderr >&2"]
    outputs: [made.txt]
  - id: left
    depends_on: [make]
    cwd: sub
    env: {{WHO: left}}
    cmd: ["sh", "-c", "cat ../made.txt; echo $WHO $ORCH_TASK_ID $ORCH_ATTEMPT; pwd"]
  - id: right
    depends_on: [make]
    slurm: {{cpus: 1, mem_mb: 64, time_min: 5, extra_args: ["--comment=orch-test"]}}
    cmd: ["sh", "-c", {json.dumps(SHOW_JOB)}]
  - id: join
    depends_on: [left, right]
    cmd: ["python3", "-c", {json.dumps(READ_CONTEXT)}]
"""


def test_dag_across_jobs(cluster: str, sorch: Orch) -> None:
    (sorch.workdir / "sub").mkdir()
    sorch.plan(DAG)
    done = sorch.run("run", "plan.yaml")
    assert done.returncode == 0, done.stderr
    run_id = run_id_of(done.stdout)
    state = sorch.state(run_id)
    assert state["executor"] == "slurm"
    logs = sorch.run_dir(run_id) / "logs"
    # Exactly the tasks' bytes, nothing of Slurm's.
    assert (logs / "make.out.log").read_text() == "make: 100%\n"
    assert (logs / "make.err.log").read_text() == "to-stderr\n"
    assert (logs / "left.out.log").read_text() == f"made\nleft left 1\n{sorch.workdir}/sub\n"
    assert (logs / "right.out.log").read_text().split() == [
        "TimeLimit=00:05:00",
        "MinMemoryNode=64M",
        "Comment=orch-test",
    ]
    assert (logs / "join.out.log").read_text() == "['left', 'right']\n"
    assert state["tasks"]["make"]["artifact_paths"]
    ids = []
    for task_id in ("make", "left", "right", "join"):
        entry = state["tasks"][task_id]
        (attempt,) = entry["history"]
        assert attempt["job_id"] == entry["job_id"] and attempt["job_id"].isdigit()
        assert attempt["pid"] is None and attempt["exit_code"] == 0
        ids.append(attempt["job_id"])
    assert len(set(ids)) == 4
    # The dependencies' jobs ended before their dependents' were submitted.
    starts = {t: state["tasks"][t]["started_at"] for t in state["tasks"]}
    ends = {t: state["tasks"][t]["ended_at"] for t in state["tasks"]}
    assert ends["make"] <= min(starts["left"], starts["right"])
    assert max(ends["left"], ends["right"]) <= starts["join"]


def test_timeouts_of_jobs(cluster: str, sorch: Orch) -> None:
    sorch.plan(
        """
        executor: slurm
        tasks:
          - id: wall
            cmd: ["sh", "-c", "echo $$ > wall.pid; echo going; exec sleep 60"]
            timeout_sec: 1.5
          - id: idle
            cmd: ["sh", "-c", "echo $$ > idle.pid; echo once; exec sleep 60"]
            idle_timeout_sec: 1
          - id: chatty
            cmd: ["sh", "-c", "for i in 1 2 3 4 5 6; do echo $i; sleep 0.4; done"]
            idle_timeout_sec: 1
        """
    )
    began = time.monotonic()
    done = sorch.run("run", "plan.yaml", "--max-parallel", "3")
    assert done.returncode == 3, done.stderr
    state = sorch.state(run_id_of(done.stdout))
    tasks = state["tasks"]
    assert (tasks["wall"]["timed_out"], tasks["wall"]["timed_out_by"]) == (True, "timeout_sec")
    assert tasks["idle"]["timed_out_by"] == "idle_timeout_sec"
    assert tasks["chatty"]["status"] == "SUCCESS"
    for task_id in ("wall", "idle"):
        assert tasks[task_id]["status"] == "FAILED"
        assert tasks[task_id]["signal"] == signal.SIGTERM  # the wrapper passed orch's TERM on
        assert tasks[task_id]["history"][0]["duration_sec"] < 6
        assert_gone(int((sorch.workdir / f"{task_id}.pid").read_text()))
        wait_for(lambda job=tasks[task_id]["job_id"]: _job_ended(job), timeout=10)
    assert time.monotonic() - began < 20


def test_retries_make_one_job_per_attempt(cluster: str, sorch: Orch) -> None:
    sorch.plan(
        """
        executor: slurm
        tasks:
          - id: flaky
            cmd: ["sh", "-c", "echo try $ORCH_ATTEMPT; [ $ORCH_ATTEMPT -ge 2 ] || exit 3"]
            retries: 2
          - id: strict
            cmd: ["sh", "-c", "exit 2"]
            retries: 2
            retry_on: [3]
        """
    )
    done = sorch.run("run", "plan.yaml")
    assert done.returncode == 3
    state = sorch.state(run_id_of(done.stdout))
    flaky = _attempts(state, "flaky")
    assert [a["exit_code"] for a in flaky] == [3, 0]
    assert state["tasks"]["flaky"]["status"] == "SUCCESS"
    assert len({a["job_id"] for a in flaky}) == 2
    log = sorch.run_dir(state["run_id"]) / "logs" / "flaky.out.log"
    assert log.read_text() == "try 1\ntry 2\n"
    assert flaky[1]["stdout_offset"] == len("try 1\n")
    strict = state["tasks"]["strict"]
    assert (strict["status"], strict["attempts"], strict["exit_code"]) == ("FAILED", 1, 2)
    assert strict["error"] == "not retried: exit 2 is not in retry_on"


def test_bad_partition_and_missing_program_fail_their_task_only(cluster: str, sorch: Orch) -> None:
    sorch.plan(
        """
        executor: slurm
        tasks:
          - id: nowhere
            cmd: ["true"]
            slurm: {partition: nosuch}
          - id: ghost
            cmd: ["no-such-program-here", "x"]
          - id: fine
            cmd: ["sh", "-c", "echo fine"]
        """
    )
    done = sorch.run("run", "plan.yaml")
    assert done.returncode == 3
    tasks = sorch.state(run_id_of(done.stdout))["tasks"]
    assert tasks["nowhere"]["status"] == "FAILED"
    assert tasks["nowhere"]["error"] == (
        "sbatch: error: invalid partition specified: nosuch; "
        "sbatch: error: Batch job submission failed: Invalid partition name specified"
    )
    assert tasks["nowhere"]["history"][0].get("job_id") is None
    assert tasks["ghost"]["error"] == (
        "cannot start 'no-such-program-here': No such file or directory"
    )
    assert tasks["fine"]["status"] == "SUCCESS"


# A task that says when TERM reached it, then ends; one that ignores TERM, as does its child.
POLITE = "trap 'echo got TERM; exit 7' TERM; echo up > up.txt; while :; do sleep 0.1; done"
STUBBORN = "trap '' TERM; sleep 60 & echo $! > child.pid; while :; do sleep 0.1; done"


def test_cancel_reaches_the_job_and_status_shows_it(cluster: str, sorch: Orch) -> None:
    sorch.plan(
        f"""
        executor: slurm
        tasks:
          - id: long
            cmd: ["sh", "-c", {json.dumps(POLITE)}]
          - id: stubborn
            cmd: ["sh", "-c", {json.dumps(STUBBORN)}]
          - id: later
            depends_on: [long]
            cmd: ["true"]
        """
    )
    proc = sorch.popen("run", "plan.yaml")
    assert proc.stdout is not None
    run_id = run_id_of(proc.stdout.readline())
    wait_for(lambda: (sorch.workdir / "up.txt").exists())
    wait_for(lambda: (sorch.workdir / "child.pid").exists())
    status = sorch.run("status", run_id)
    job_id = sorch.state(run_id)["tasks"]["long"]["job_id"]
    assert f"slurm job {job_id} RUNNING" in status.stdout
    shown = json.loads(sorch.run("status", run_id, "--json").stdout)
    assert shown["tasks"]["long"]["slurm_state"] == "RUNNING"
    assert sorch.run("cancel", run_id).returncode == 0
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 4, err
    state = sorch.state(run_id)
    assert state["tasks"]["long"]["status"] == "CANCELED"
    assert state["tasks"]["later"]["status"] == "CANCELED"
    out = sorch.run_dir(run_id) / "logs" / "long.out.log"
    assert out.read_text() == "got TERM\n"  # TERM first, as for a local task
    wait_for(lambda: _job_ended(job_id), timeout=10)
    # After the grace period, scancel: Slurm KILLs what ignored the TERM, grandchildren too.
    stubborn = state["tasks"]["stubborn"]
    assert (stubborn["status"], stubborn["signal"]) == ("CANCELED", signal.SIGKILL)
    assert_gone(int((sorch.workdir / "child.pid").read_text()))


# `once` counts its runs, then waits for its go file; so does `other`, which ends with exit 5.
WAIT = "echo run >> {0}.count; while [ ! -e go.{0} ]; do sleep 0.1; done"
CRASH = f"""
executor: slurm
tasks:
  - id: once
    cmd: ["sh", "-c", {json.dumps(WAIT.format("once") + "; echo done")}]
  - id: other
    cmd: ["sh", "-c", {json.dumps(WAIT.format("other") + "; exit 5")}]
  - id: after
    depends_on: [once]
    cmd: ["sh", "-c", "echo after >> after.count"]
"""


def _crash(orch: Orch, plan: str) -> str:
    """Start ``plan``, SIGKILL orch once both jobs run; returns the run id."""
    orch.plan(plan)
    proc = orch.popen("run", "plan.yaml")
    assert proc.stdout is not None
    run_id = run_id_of(proc.stdout.readline())
    wait_for(lambda: _lines(orch.workdir / "once.count") and _lines(orch.workdir / "other.count"))
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    return run_id


def test_sigkill_then_resume_adopts_the_jobs(cluster: str, sorch: Orch) -> None:
    run_id = _crash(sorch, CRASH)
    state = sorch.state(run_id)
    once_job = state["tasks"]["once"]["job_id"]
    other_job = state["tasks"]["other"]["job_id"]
    assert _squeue(once_job) == "RUNNING" and _squeue(other_job) == "RUNNING"
    status = sorch.run("status", run_id).stdout
    assert "INTERRUPTED" in status and f"slurm job {once_job} RUNNING" in status
    # `other` ends while no orch watches: its exit code waits in its exit file.
    (sorch.workdir / "go.other").touch()
    wait_for(lambda: _job_ended(other_job), timeout=15)
    resume = sorch.popen("resume", run_id)
    # `once` is still running: adopted, so the resume waits for it.
    time.sleep(1.0)
    assert resume.poll() is None
    (sorch.workdir / "go.once").touch()
    _, err = resume.communicate(timeout=60)
    assert resume.returncode == 3, err
    state = sorch.state(run_id)
    tasks = state["tasks"]
    # Each command ran once: adopted, never submitted again.
    assert _lines(sorch.workdir / "once.count") == ["run"]
    assert _lines(sorch.workdir / "other.count") == ["run"]
    assert _lines(sorch.workdir / "after.count") == ["after"]
    assert [a["job_id"] for a in tasks["once"]["history"]] == [once_job]
    assert (tasks["once"]["status"], tasks["once"]["attempts"]) == ("SUCCESS", 1)
    assert tasks["once"]["history"][0]["exit_code"] == 0
    assert [a["job_id"] for a in tasks["other"]["history"]] == [other_job]
    assert (tasks["other"]["status"], tasks["other"]["exit_code"]) == ("FAILED", 5)
    assert tasks["after"]["status"] == "SUCCESS"
    log = sorch.run_dir(run_id) / "logs" / "once.out.log"
    assert log.read_text() == "done\n"


def test_resume_records_a_job_that_vanished_without_an_exit_code(cluster: str, sorch: Orch) -> None:
    run_id = _crash(sorch, CRASH)
    state = sorch.state(run_id)
    once_job = state["tasks"]["once"]["job_id"]
    # As if its node died: every process of the job KILLed, none left to write the exit file
    # (scancel cannot do that: with any signal it TERMs first, and the wrapper reports 143).
    for pid in _job_pids(once_job):
        os.kill(pid, signal.SIGKILL)
    wait_for(lambda: _job_ended(once_job), timeout=15)
    (sorch.workdir / "go.other").touch()
    done = sorch.run("resume", run_id)
    assert done.returncode == 3, done.stderr
    tasks = sorch.state(run_id)["tasks"]
    error = tasks["once"]["error"]
    assert tasks["once"]["status"] == "FAILED" and tasks["once"]["attempts"] == 1
    assert error.startswith(f"Slurm job {once_job} ") and "without writing an exit code" in error
    assert tasks["after"]["skip_reason"] == "dependency_not_success"
    assert tasks["other"]["exit_code"] == 5 and tasks["other"]["attempts"] == 1


def test_cancel_of_an_interrupted_run_reaches_its_jobs(cluster: str, sorch: Orch) -> None:
    run_id = _crash(sorch, CRASH)
    jobs = [sorch.state(run_id)["tasks"][t]["job_id"] for t in ("once", "other")]
    pids = [pid for job_id in jobs for pid in _job_pids(job_id)]
    assert pids
    done = sorch.run("cancel", run_id)
    assert done.returncode == 0 and "run marked CANCELED" in done.stdout
    for job_id in jobs:
        assert _job_ended(job_id)
    for pid in pids:
        assert_gone(pid)
    state = sorch.state(run_id)
    assert state["status"] == "CANCELED"
    assert {t["status"] for t in state["tasks"].values()} == {"CANCELED"}


def test_a_queued_job_shows_its_reason_and_is_cancelled_at_once(cluster: str, sorch: Orch) -> None:
    # More CPUs than the node has: Slurm accepts the job and keeps it PENDING for ever.
    sorch.plan(
        """
        executor: slurm
        tasks:
          - id: big
            cmd: ["true"]
            slurm: {cpus: 64}
        """
    )
    proc = sorch.popen("run", "plan.yaml")
    assert proc.stdout is not None
    run_id = run_id_of(proc.stdout.readline())
    wait_for(lambda: sorch.state(run_id)["tasks"]["big"].get("job_id"))
    job_id = sorch.state(run_id)["tasks"]["big"]["job_id"]
    wait_for(lambda: "PENDING (PartitionConfig)" in sorch.run("status", run_id).stdout)
    assert f"slurm job {job_id} PENDING (PartitionConfig)" in sorch.run("status", run_id).stdout
    began = time.monotonic()
    assert sorch.run("cancel", run_id).returncode == 0
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 4, err
    assert time.monotonic() - began < 5  # no grace period for a job with no process
    big = sorch.state(run_id)["tasks"]["big"]
    assert (big["status"], big["signal"], big["exit_code"]) == ("CANCELED", None, None)
    assert _squeue(job_id) in ("CANCELLED", "")


# `first` fails; `report` (run_when: done) runs after it and waits for its go file.
RERUN = f"""
executor: slurm
tasks:
  - id: first
    cmd: ["sh", "-c", "exit 1"]
  - id: report
    depends_on: [first]
    run_when: done
    cmd: ["sh", "-c", {json.dumps(WAIT.format("report"))}]
"""


def test_resume_does_not_adopt_a_job_whose_dependency_runs_again(cluster: str, sorch: Orch) -> None:
    sorch.plan(RERUN)
    proc = sorch.popen("run", "plan.yaml")
    assert proc.stdout is not None
    run_id = run_id_of(proc.stdout.readline())
    wait_for(lambda: _lines(sorch.workdir / "report.count"))
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    old_job = sorch.state(run_id)["tasks"]["report"]["job_id"]
    # The resume runs `first` again (FAILED), so the job `report` runs on `first`'s old result
    # is ended, not adopted, and `report` runs again after the new `first`.
    resume = sorch.popen("resume", run_id)
    wait_for(lambda: len(_lines(sorch.workdir / "report.count")) == 2)
    assert _job_ended(old_job)
    (sorch.workdir / "go.report").touch()
    _, err = resume.communicate(timeout=60)
    assert resume.returncode == 3, err
    history = sorch.state(run_id)["tasks"]["report"]["history"]
    assert [a["job_id"] == old_job for a in history] == [True, False]
    assert history[0]["error"] == "interrupted" and history[1]["exit_code"] == 0
