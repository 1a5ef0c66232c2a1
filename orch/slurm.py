"""The ``slurm`` executor: every attempt is one Slurm batch job, behind the Runner protocol.

orch stays the DAG and policy brain; Slurm places and runs the jobs (as Snakemake's Slurm
plugin and Nextflow's grid executors do; re-attaching after a restart is PSI/J's ``attach``).
An attempt is ``sbatch --parsable --no-requeue`` of the run's wrapper script (``WRAPPER``,
written once to ``<run dir>/slurm/wrapper.sh``), named ``orch-<run_id>-<task_id>-<attempt>``.
The job appends the command's stdout and stderr straight to the task's log files
(``--open-mode=append``) and, when the command ends, writes its exit code to
``<run dir>/slurm/<task>.<attempt>.exit``: the run directory must be on a filesystem the nodes
share. Slurm's exit codes and accounting are never read.

Seeing an end: the exit file is the normal path (one ``stat`` per running job, at an interval
that grows with the job's age from 10 ms to 250 ms). One ``squeue`` call for all of the run's
jobs, every 0.1 s after a submission and growing to 2 s, finds the jobs that ended without
writing one (launch failure, node failure, an administrator's scancel). squeue runs in the
background with its output in a temporary file, so a slow or unreachable controller never
stalls the scheduler's loop (a client retries a dead controller for MessageTimeout, ~10 s).

Limits are orch's, as for local attempts (Slurm's time limits are whole minutes), and count
from the moment the command started (the wrapper touches ``<exit file>.run``), not from the
submission: time in the queue is not the task's. Ending a job: ``scancel --full
--signal=TERM`` (the wrapper forwards it to the command's process group), the grace period,
then ``scancel`` (Slurm's own TERM, then KILL after the cluster's KillWait).
"""

from __future__ import annotations

import functools
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from typing import IO, Callable, Dict, List, Mapping, NamedTuple, Optional, Sequence, Tuple, Union

from orch.errors import UsageError
from orch.layout import RunLayout
from orch.model import SlurmOptions
from orch.runner import (
    AttemptResult,
    AttemptSpec,
    IdleWatch,
    Started,
    failed_result,
    file_size,
)
from orch.state import RunState

__all__ = [
    "WRAPPER",
    "JobInfo",
    "SlurmError",
    "SlurmRunner",
    "add_job_states",
    "cancel_run_jobs",
    "job_name",
    "output_pattern",
    "preflight",
    "recover_jobs",
    "run_jobs",
    "sbatch_options",
]

# The batch script of every job. $1: the exit-code file; the rest: the command, as "$@".
# - setsid gives the command its own process group (its pgid is $!: a background child is no
#   group leader, so setsid execs in place), which the TERM trap signals as a whole; the shell
#   itself keeps waiting, so that Slurm's KILL at KillWait still finds the whole tree (a shell
#   that died on TERM would orphan its children out of Slurm's reach).
# - `wait` returns early when a trapped signal arrives: loop until the child is really gone.
# - The group is KILLed once the command's leader ended, as the local runner does.
# - The exit file appears whole (mv); "start_error" when the program is not there at all.
WRAPPER = """#!/bin/sh
# orch: the batch script of this run's Slurm jobs. $1 = the job's file stem, $2 = the task's
# stderr log, the rest = the command.
job=$1
err=$2
shift 2
: >"$job.run"
if ! command -v "$1" >/dev/null 2>&1; then
  echo start_error >"$job.tmp" && mv "$job.tmp" "$job.exit"
  exit 127
fi
child=
term=
trap 'term=1; [ -z "$child" ] || kill -TERM -"$child" 2>/dev/null' TERM INT HUP
setsid "$@" 2>>"$err" &
child=$!
[ -z "$term" ] || kill -TERM -"$child" 2>/dev/null
while :; do
  wait "$child"
  rc=$?
  kill -0 "$child" 2>/dev/null || break
done
kill -KILL -"$child" 2>/dev/null
echo "$rc" >"$job.tmp" && mv "$job.tmp" "$job.exit"
exit "$rc"
"""

_COMMANDS = ("sbatch", "squeue", "scancel", "scontrol")
_FORMAT = "%i|%j|%T|%r"
# sbatch and squeue against a controller that is down retry for MessageTimeout (10 s by
# default) before failing; these bound a controller that hangs.
_SUBMIT_TIMEOUT = 60.0
_QUERY_TIMEOUT = 30.0
_STATUS_TIMEOUT = 3.0  # `orch status` shows the job ids without states rather than wait
# squeue: every _POLL_MIN after a submission, growing by _POLL_GROWTH up to _POLL_MAX.
_POLL_MIN = 0.1
_POLL_MAX = 2.0
_POLL_GROWTH = 2.0
# Exit files: looked at every (time the command has run * _FILE_CHECK_FACTOR), within these
# bounds; a job not seen started yet every _FILE_CHECK_QUEUED (Slurm takes longer to start one).
_FILE_CHECK_MIN = 0.02
_FILE_CHECK_MAX = 0.25
_FILE_CHECK_FACTOR = 0.1
_FILE_CHECK_QUEUED = 0.1
# A job Slurm says ended gets this long for its exit file to show (a shared filesystem's
# attribute cache may lag behind the node that wrote it); less when orch ended it, since a
# command KILLed at the end of the grace period writes none.
_EXIT_SETTLE_SEC = 3.0
_EXIT_SETTLE_KILLED_SEC = 0.5
# After the final scancel: how long to wait for Slurm to confirm the end, and how often to ask
# again meanwhile.
_KILL_CONFIRM_SEC = 120.0
_KILL_RESEND_SEC = 10.0
# Recovery and `orch cancel` of an orphaned run: how long Slurm gets to end the jobs after
# the final scancel (KillWait is 30 s by default).
_RECOVER_KILL_WAIT = 40.0
_RECOVER_POLL = 0.2
_NSIG = 65
# Job states (squeue %T). A state not listed counts as not ended yet.
_TERMINAL = frozenset(
    {
        "BOOT_FAIL",
        "CANCELLED",
        "COMPLETED",
        "DEADLINE",
        "FAILED",
        "NODE_FAIL",
        "OUT_OF_MEMORY",
        "PREEMPTED",
        "REVOKED",
        "SPECIAL_EXIT",
        "TIMEOUT",
    }
)
_RUNNING = frozenset({"RUNNING", "COMPLETING", "SUSPENDED", "SIGNALING", "STAGE_OUT", "STOPPED"})


class SlurmError(Exception):
    """A Slurm command failed or did not answer; the message is one line."""


class JobInfo(NamedTuple):
    """One line of squeue."""

    job_id: str
    name: str
    state: str
    reason: str

    def describe(self) -> str:
        """``RUNNING`` or ``PENDING (Resources)``: the state, with Slurm's reason if any."""
        if self.reason and self.reason != "None":
            return f"{self.state} ({self.reason})"
        return self.state


def job_name(run_id: str, task_id: str, attempt: int) -> str:
    return f"orch-{run_id}-{task_id}-{attempt}"


def _parse_name(run_id: str, name: str) -> Optional[Tuple[str, int]]:
    """(task id, attempt) of one of the run's job names, else None."""
    prefix = f"orch-{run_id}-"
    if not name.startswith(prefix):
        return None
    task_id, _, attempt = name[len(prefix) :].rpartition("-")
    return (task_id, int(attempt)) if task_id and attempt.isdigit() else None


def output_pattern(path: str) -> str:
    """``path`` as a literal --output/--error file name.

    Verified on Slurm 22.05: without a backslash, ``%`` starts a replacement (``%j``...) and
    ``%%`` is a literal ``%``; with any backslash in it, no replacement is done at all and
    ``\\\\`` stands for one backslash.
    """
    if "\\" in path:
        return path.replace("\\", "\\\\")
    return path.replace("%", "%%")


@functools.lru_cache(maxsize=None)
def _command(name: str) -> str:
    """The command on orch's own PATH (a task's env may change PATH; sbatch must not move)."""
    return shutil.which(name) or name


def _message(what: str, stdout: bytes, stderr: bytes, code: int) -> str:
    text = stderr.decode("utf-8", "replace").strip() or stdout.decode("utf-8", "replace").strip()
    # scontrol ping's "** RESTORE SLURMCTLD DAEMON TO SERVICE **" banner says nothing more.
    lines = [line.strip() for line in text.splitlines() if line.strip("* \t")]
    lines = [line for line in lines if not (line.startswith("**") and line.endswith("**"))]
    return "; ".join(lines) if lines else f"{what} failed (exit {code})"


def _run(argv: Sequence[str], timeout: float, env: Optional[Mapping[str, str]] = None) -> str:
    """stdout of a Slurm command, or SlurmError with its message."""
    try:
        done = subprocess.run(
            list(argv),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            env=None if env is None else dict(env),
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise SlurmError(
            f"{os.path.basename(argv[0])} did not answer within {timeout:g}s"
        ) from None
    except OSError as err:
        raise SlurmError(f"{argv[0]}: {err.strerror or err}") from None
    if done.returncode != 0:
        raise SlurmError(
            _message(os.path.basename(argv[0]), done.stdout, done.stderr, done.returncode)
        )
    return done.stdout.decode("utf-8", "replace")


def _parse_squeue(text: str) -> List[JobInfo]:
    jobs = []
    for line in text.splitlines():
        parts = line.split("|")
        if len(parts) >= 4:
            name = "|".join(parts[1:-2])
            jobs.append(JobInfo(parts[0].strip(), name, parts[-2].strip(), parts[-1].strip()))
    return jobs


def _squeue_argv(names: Sequence[str] = ()) -> List[str]:
    # -t all: a finished job stays listed (until MinJobAge) with its final state, where plain
    # squeue drops it at once. --name takes exact names only (no prefix matching).
    argv = [_command("squeue"), "--me", "-h", "-t", "all", "-o", _FORMAT]
    if names:
        argv.append("--name=" + ",".join(names))
    return argv


# --------------------------------------------------------------------------- outside a session


def preflight() -> None:
    """Refuse (UsageError, one line, exit 2) when Slurm cannot take jobs from this machine."""
    missing = [name for name in _COMMANDS if shutil.which(name) is None]
    if missing:
        raise UsageError(
            f"executor slurm: {', '.join(missing)} not found on PATH; install the Slurm client "
            "commands or use --executor local"
        )
    try:
        _run([_command("scontrol"), "ping"], _QUERY_TIMEOUT)
    except SlurmError as err:
        raise UsageError(
            f"executor slurm: the Slurm controller does not answer (scontrol ping: {err})"
        ) from None


def run_jobs(run_id: str) -> List[JobInfo]:
    """Every job of the run squeue still knows (running, queued, or ended recently)."""
    text = _run(_squeue_argv(), _QUERY_TIMEOUT)
    return [job for job in _parse_squeue(text) if _parse_name(run_id, job.name) is not None]


def add_job_states(state: RunState) -> None:
    """For `orch status`: ``slurm_state`` (``RUNNING``, ``PENDING (Resources)``, ...) on each
    RUNNING task with a job, from one squeue call; left out when Slurm cannot be asked."""
    running = {
        task_id: (job_name(state["run_id"], task_id, entry["attempts"]), str(entry["job_id"]))
        for task_id, entry in state["tasks"].items()
        if entry.get("status") == "RUNNING" and entry.get("job_id")
    }
    if not running:
        return
    try:
        text = _run(_squeue_argv([name for name, _ in running.values()]), _STATUS_TIMEOUT)
    except SlurmError:
        return
    by_id = {job.job_id: job for job in _parse_squeue(text)}
    for task_id, (_, job_id) in running.items():
        job = by_id.get(job_id)
        state["tasks"][task_id]["slurm_state"] = job.describe() if job else "gone from squeue"


def recover_jobs(
    run_id: str,
    open_jobs: Mapping[str, str],
    grace: float,
    *,
    adopt: bool,
    warn: Callable[[str], None],
) -> Dict[str, str]:
    """After a crash of orch: which of ``open_jobs`` (task -> job id of its attempt left
    open) a resume adopts, and every other job of the run still alive ended.

    With ``adopt``, every open attempt's job is kept, whatever squeue says: the runner finds
    out itself whether it still runs, ended (its exit file) or vanished. Jobs the dead orch
    submitted but never recorded (killed between sbatch and the journal write) are ended, and
    so is everything when not adopting (`orch cancel`, or a resume with --executor local).
    """
    keep = dict(open_jobs) if adopt else {}
    try:
        jobs: Optional[List[JobInfo]] = run_jobs(run_id)
    except SlurmError as err:
        warn(f"orch: cannot list the run's Slurm jobs: {err}")
        jobs = None
    if jobs is None:
        ending = [] if adopt else [JobInfo(j, "", "", "") for j in open_jobs.values()]
    else:
        kept = set(keep.values())
        ending = [j for j in jobs if j.state not in _TERMINAL and j.job_id not in kept]
    if ending:
        cancel_run_jobs(run_id, ending, grace, warn)
    return keep


def cancel_run_jobs(
    run_id: str, jobs: Sequence[JobInfo], grace: float, warn: Callable[[str], None]
) -> None:
    """End jobs of a run no orch is watching: TERM, grace, scancel, then wait for Slurm to
    confirm (bounded). Queued jobs are cancelled at once (they have no process to TERM)."""
    scancel = _command("scancel")
    queued = [j.job_id for j in jobs if j.state == "PENDING"]
    started = [j.job_id for j in jobs if j.state != "PENDING"]
    if queued:
        _quiet([scancel, *queued])
    if started:
        _quiet([scancel, "--full", "--signal=TERM", *started])
    deadline = time.monotonic() + grace
    while started and time.monotonic() < deadline:
        time.sleep(_RECOVER_POLL)
        started = _still_live(run_id, started)
    if started:
        _quiet([scancel, *started])
    left = [j.job_id for j in jobs]
    deadline = time.monotonic() + _RECOVER_KILL_WAIT
    while left and time.monotonic() < deadline:
        left = _still_live(run_id, left)
        if left:
            time.sleep(_RECOVER_POLL)
    if left:
        warn(f"orch: Slurm has not confirmed the end of job(s) {', '.join(left)}")


def _still_live(run_id: str, job_ids: Sequence[str]) -> List[str]:
    try:
        live = {j.job_id for j in run_jobs(run_id) if j.state not in _TERMINAL}
    except SlurmError:
        return list(job_ids)  # cannot tell: assume alive until the deadline
    return [job_id for job_id in job_ids if job_id in live]


def _quiet(argv: Sequence[str]) -> None:
    try:
        _run(argv, _QUERY_TIMEOUT)
    except SlurmError:
        pass  # e.g. a job that ended meanwhile: "Job/step already completing or completed"


# --------------------------------------------------------------------------- the runner


def _mtime(path: str) -> Optional[float]:
    try:
        return os.stat(path).st_mtime
    except OSError:
        return None


def _read_exit(path: str) -> Optional[str]:
    """The exit file's text, or None while there is none (it appears whole: mv)."""
    try:
        with open(path, encoding="ascii", errors="replace") as f:
            return f.read(64).strip()
    except OSError:
        return None


class _Job:
    """One attempt's batch job, as the runner follows it."""

    __slots__ = (
        "canceled",
        "ended_seen",
        "idle",
        "kill_at",
        "killed_at",
        "name",
        "next_file_check",
        "resend_at",
        "running",
        "running_since",
        "spec",
        "started",
        "state",
        "stem",
        "timed_out_by",
        "wall_deadline",
    )

    def __init__(self, spec: AttemptSpec, started: Started, name: str, stem: str) -> None:
        now = time.monotonic()
        self.spec = spec
        self.started = started
        self.name = name
        self.stem = stem  # + .exit, .run, .err: RunLayout.slurm_job
        self.next_file_check = now
        self.running = False  # the command has started (the .run marker, or squeue)
        self.running_since: Optional[float] = None  # when orch saw that
        self.wall_deadline: Optional[float] = None
        self.idle: Optional[IdleWatch] = None  # set once the command runs
        self.kill_at: Optional[float] = None  # TERM sent: when the grace period ends
        self.killed_at: Optional[float] = None  # the final scancel went out
        self.resend_at: Optional[float] = None
        self.canceled = False
        self.timed_out_by: Optional[str] = None
        self.state: Optional[JobInfo] = None  # squeue's last word; None: not seen yet
        self.ended_seen: Optional[float] = None  # when squeue first said it ended or was gone

    @property
    def job_id(self) -> str:
        assert self.started.job_id is not None
        return self.started.job_id

    @property
    def ending(self) -> bool:
        return self.kill_at is not None or self.killed_at is not None


class _Query:
    """One squeue call running in the background."""

    __slots__ = ("began", "job_ids", "out", "proc")

    def __init__(self, proc: subprocess.Popen[bytes], out: IO[bytes], job_ids: List[str]) -> None:
        self.proc = proc
        self.out = out
        self.job_ids = job_ids
        self.began = time.monotonic()


class SlurmRunner:
    """Attempts as Slurm batch jobs (see the module docstring)."""

    def __init__(self, run_dir: str, run_id: str, options: Mapping[str, SlurmOptions]) -> None:
        self._layout = RunLayout(run_dir)
        self._run_id = run_id
        self._options = dict(options)
        self._jobs: Dict[str, _Job] = {}
        self._done: List[Tuple[str, AttemptResult]] = []
        self._helpers: List[subprocess.Popen[bytes]] = []  # scancel calls in flight
        self._query: Optional[_Query] = None
        self._poll_every = _POLL_MIN
        self._next_poll = 0.0
        self._wrapper_ready = False
        self._sbatch = _command("sbatch")
        self._scancel = _command("scancel")

    # ------------------------------------------------------------------ the protocol

    def start(self, spec: AttemptSpec) -> Union[Started, AttemptResult]:
        started_at = time.time()
        offsets = (file_size(spec.stdout_path), file_size(spec.stderr_path))
        error = _precheck(spec)
        if error is not None:
            return failed_result(error, started_at, offsets)
        stem = self._layout.slurm_job(spec.task_id, spec.attempt)
        try:
            self._prepare(spec, stem)
        except OSError as err:
            why = f"{err.filename}: {err.strerror}" if err.filename else str(err)
            return failed_result(f"cannot prepare the Slurm job: {why}", started_at, offsets)
        name = job_name(self._run_id, spec.task_id, spec.attempt)
        argv = self._sbatch_argv(spec, name, stem)
        try:
            out = _run(argv, _SUBMIT_TIMEOUT, env=spec.env)
        except SlurmError as err:
            if "did not answer" in str(err):
                # It may have been queued all the same: never leave a job nobody records.
                self._spawn([self._scancel, f"--user={_user()}", f"--name={name}"])
            return failed_result(str(err), started_at, offsets)
        job_id = out.strip().split(";", 1)[0].strip()
        if not job_id:
            return failed_result("sbatch printed no job id", started_at, offsets)
        started = Started(None, None, started_at, *offsets, job_id=job_id)
        self._track(spec, started)
        return started

    def adopt(self, spec: AttemptSpec, started: Started) -> None:
        if started.job_id is None:
            error = "interrupted: no Slurm job was recorded for this attempt"
            offsets = (started.stdout_offset, started.stderr_offset)
            self._done.append((spec.task_id, failed_result(error, started.started_at, offsets)))
            return
        self._track(spec, started)

    def running(self) -> int:
        return len(self._jobs)

    def wait(self, timeout: float) -> List[Tuple[str, AttemptResult]]:
        deadline = time.monotonic() + max(0.0, timeout)
        while True:
            now = time.monotonic()
            self._reap_helpers()
            self._poll_squeue(now)
            for job in list(self._jobs.values()):
                self._check(job, now)
            if self._done or now >= deadline:
                done, self._done = self._done, []
                return done
            wake = min(deadline, self._next_wake(now))
            time.sleep(max(0.001, wake - time.monotonic()))

    def cancel(self, task_id: str) -> None:
        job = self._jobs.get(task_id)
        if job is not None and not job.ending:
            job.canceled = True
            self._terminate(job, time.monotonic())

    def kill_all(self) -> None:
        # No faster end exists: scancel with any KILL signal is a plain cancel (TERM, then KILL
        # after the cluster's KillWait); `--batch --signal=KILL` would orphan the command.
        now = time.monotonic()
        ids = [job.job_id for job in self._jobs.values() if job.killed_at is None]
        if ids:
            self._spawn([self._scancel, *ids])
        for job in self._jobs.values():
            if job.killed_at is None:
                job.kill_at = None
                job.killed_at = now
                job.resend_at = now + _KILL_RESEND_SEC

    def close(self) -> None:
        ids = [job.job_id for job in self._jobs.values()]
        if ids:
            # Nobody will watch these any more: no job of the run outlives its orch's close.
            _quiet([self._scancel, *ids])
        self._jobs.clear()
        if self._query is not None:
            if self._query.proc.poll() is None:
                self._query.proc.kill()
            self._query.proc.wait()
            self._query.out.close()
            self._query = None
        give_up = time.monotonic() + 10.0
        for helper in self._helpers:
            try:
                helper.wait(max(0.0, give_up - time.monotonic()))
            except subprocess.TimeoutExpired:
                helper.kill()
                helper.wait()
        self._helpers.clear()

    # ------------------------------------------------------------------ submitting

    def _prepare(self, spec: AttemptSpec, stem: str) -> None:
        if not self._wrapper_ready:
            _write_wrapper(self._layout)
            self._wrapper_ready = True
        # An attempt number is reused only after a crash between sbatch and the journal
        # write; whatever that lost job left must not be read as this attempt's outcome.
        for stale in (stem + ".exit", stem + ".run", stem + ".tmp", stem + ".err"):
            try:
                os.unlink(stale)
            except FileNotFoundError:
                pass
        # Created here, private: slurmstepd then appends to them as they are.
        for path in (spec.stdout_path, spec.stderr_path):
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600))

    def _sbatch_argv(self, spec: AttemptSpec, name: str, stem: str) -> List[str]:
        argv = [
            self._sbatch,
            "--parsable",
            "--no-requeue",  # orch retries; a requeued job would run the command twice
            f"--job-name={name}",
            f"--output={output_pattern(spec.stdout_path)}",
            # Slurm's own messages ("*** JOB 7 CANCELLED ***", "couldn't chdir") go to a file
            # of the job: the task's stderr log gets the command's bytes only (the wrapper
            # appends them to it itself).
            f"--error={output_pattern(stem + '.err')}",
            "--open-mode=append",
            f"--chdir={os.path.abspath(spec.cwd)}",
            "--export=ALL",  # sbatch's environment, which is the task's (env= below)
        ]
        argv.extend(sbatch_options(self._options.get(spec.task_id)))
        argv.extend([self._layout.slurm_wrapper, stem, spec.stderr_path, *spec.argv])
        return argv

    def _track(self, spec: AttemptSpec, started: Started) -> None:
        name = job_name(self._run_id, spec.task_id, spec.attempt)
        self._jobs[spec.task_id] = _Job(
            spec, started, name, self._layout.slurm_job(spec.task_id, spec.attempt)
        )
        # A new job: ask squeue soon (a launch failure shows there only), then less often.
        self._poll_every = _POLL_MIN
        self._next_poll = min(self._next_poll, time.monotonic() + _POLL_MIN)

    def _spawn(self, argv: List[str]) -> None:
        """Run a scancel without waiting for it (reaped by later waits)."""
        try:
            self._helpers.append(
                subprocess.Popen(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
        except OSError:
            pass  # no scancel any more: the job is still followed and reported when it ends

    def _reap_helpers(self) -> None:
        if self._helpers:
            self._helpers = [h for h in self._helpers if h.poll() is None]

    # ------------------------------------------------------------------ watching

    def _poll_squeue(self, now: float) -> None:
        query = self._query
        if query is not None:
            if query.proc.poll() is None:
                if now - query.began > _QUERY_TIMEOUT:
                    query.proc.kill()
                else:
                    return
            query.proc.wait()
            self._query = None
            query.out.seek(0)
            text = query.out.read().decode("utf-8", "replace")
            query.out.close()
            if query.proc.returncode == 0:
                self._apply(_parse_squeue(text), query.job_ids, now)
            # else: the controller did not answer; the jobs are asked about again later
            self._poll_every = min(self._poll_every * _POLL_GROWTH, _POLL_MAX)
            self._next_poll = now + self._poll_every
            return
        if not self._jobs or now < self._next_poll:
            return
        jobs = list(self._jobs.values())
        # A file, not a pipe: squeue may print more than a pipe holds while nobody reads.
        out = tempfile.TemporaryFile()  # noqa: SIM115 (closed when the query is collected)
        try:
            proc = subprocess.Popen(
                _squeue_argv([job.name for job in jobs]),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.DEVNULL,
            )
        except OSError:
            out.close()
            self._next_poll = now + _POLL_MAX
            return
        self._query = _Query(proc, out, [job.job_id for job in jobs])

    def _apply(self, infos: List[JobInfo], asked: List[str], now: float) -> None:
        by_id = {info.job_id: info for info in infos}
        asked_ids = set(asked)
        for job in self._jobs.values():
            if job.job_id not in asked_ids:
                continue  # submitted after the query began
            info = by_id.get(job.job_id)
            if info is not None:
                job.state = info
            if info is None or info.state in _TERMINAL:
                if job.ended_seen is None:
                    job.ended_seen = now
                    job.next_file_check = now
            elif info.state in _RUNNING and not job.running:
                self._began(job, now)

    def _check(self, job: _Job, now: float) -> None:
        if now >= job.next_file_check:
            if job.running_since is None:
                step = _FILE_CHECK_QUEUED
            else:
                age = now - job.running_since
                step = min(_FILE_CHECK_MAX, max(_FILE_CHECK_MIN, age * _FILE_CHECK_FACTOR))
            job.next_file_check = now + step
            text = _read_exit(job.stem + ".exit")
            if text:
                self._finish(job, text)
                return
            if not job.running and os.path.exists(job.stem + ".run"):
                self._began(job, now)
        if job.ended_seen is not None and now >= job.ended_seen + _settle(job):
            self._finish(job, _read_exit(job.stem + ".exit") or None)
            return
        self._check_limits(job, now)

    def _began(self, job: _Job, now: float) -> None:
        """The command started: its limits start counting (from the marker's time, which
        also covers an adopted job that started while no orch was watching)."""
        job.running = True
        job.running_since = now
        spec = job.spec
        wall_now = time.time()
        since_submit = max(0.0, wall_now - job.started.started_at)
        mark = _mtime(job.stem + ".run") or wall_now
        elapsed = min(max(0.0, wall_now - mark), since_submit)
        if spec.timeout_sec is not None:
            job.wall_deadline = now + spec.timeout_sec - elapsed
        if spec.idle_timeout_sec is not None:
            sizes = (file_size(spec.stdout_path), file_size(spec.stderr_path))
            last = mark
            if sizes != (job.started.stdout_offset, job.started.stderr_offset):
                times = [t for t in map(_mtime, (spec.stdout_path, spec.stderr_path)) if t]
                last = max([mark, *times])
            quiet = min(max(0.0, wall_now - last), since_submit)
            job.idle = IdleWatch(spec.idle_timeout_sec, now, sizes, quiet)

    def _check_limits(self, job: _Job, now: float) -> None:
        if job.killed_at is not None:
            if now >= job.killed_at + _KILL_CONFIRM_SEC:
                self._finish(job, None, f"scancel did not end Slurm job {job.job_id}")
            elif job.resend_at is not None and now >= job.resend_at:
                job.resend_at = now + _KILL_RESEND_SEC
                self._spawn([self._scancel, job.job_id])
            return
        if job.kill_at is not None:
            if now >= job.kill_at:
                self._kill(job, now)
            return
        if job.wall_deadline is not None and now >= job.wall_deadline:
            job.timed_out_by = "timeout_sec"
            self._terminate(job, now)
        elif job.idle is not None and job.idle.fired(now, job.spec):
            job.timed_out_by = "idle_timeout_sec"
            self._terminate(job, now)

    def _terminate(self, job: _Job, now: float) -> None:
        if not job.running:
            # Still queued: no process to TERM (scancel --signal refuses a pending job).
            self._kill(job, now)
            return
        self._spawn([self._scancel, "--full", "--signal=TERM", job.job_id])
        job.kill_at = now + job.spec.grace_sec

    def _kill(self, job: _Job, now: float) -> None:
        self._spawn([self._scancel, job.job_id])
        job.kill_at = None
        job.killed_at = now
        job.resend_at = now + _KILL_RESEND_SEC

    def _next_wake(self, now: float) -> float:
        times = [now + _POLL_MAX]
        if self._query is not None:
            times.append(now + _FILE_CHECK_MIN)
        elif self._jobs:
            times.append(self._next_poll)
        for job in self._jobs.values():
            times.append(job.next_file_check)
            idle = job.idle.check_at if job.idle is not None else None
            for t in (job.wall_deadline, idle, job.kill_at, job.resend_at):
                if t is not None:
                    times.append(t)
            if job.ended_seen is not None:
                times.append(job.ended_seen + _settle(job))
        return min(times)

    def _finish(self, job: _Job, text: Optional[str], error: Optional[str] = None) -> None:
        if self._jobs.pop(job.spec.task_id, None) is None:
            return
        exit_code: Optional[int] = None
        signal_number: Optional[int] = None
        job_id: Optional[str] = job.job_id
        if text == "start_error":
            error = f"cannot start {job.spec.argv[0]!r}: No such file or directory"
            job_id = None  # the command never ran: a start error, as with local attempts
        elif text is not None:
            try:
                code = int(text)
            except ValueError:
                error = f"unreadable exit code file {job.stem}.exit: {text[:40]!r}"
            else:
                # The shell's convention, the only one the wrapper sees: 128 + N is signal N.
                if 128 < code < 128 + _NSIG:
                    signal_number = code - 128
                else:
                    exit_code = code
        elif error is None:
            if job.ending:
                # Ended by orch with no exit file: the command did not survive the KILL.
                signal_number = signal.SIGKILL if job.running else None
            else:
                error = _lost(job)
        ended_at = time.time()
        self._done.append(
            (
                job.spec.task_id,
                AttemptResult(
                    exit_code=exit_code,
                    signal=signal_number,
                    timed_out=job.timed_out_by is not None,
                    canceled=job.canceled,
                    error=error,
                    started_at=job.started.started_at,
                    ended_at=ended_at,
                    pid=None,
                    stdout_offset=job.started.stdout_offset,
                    stderr_offset=job.started.stderr_offset,
                    timed_out_by=job.timed_out_by,
                    job_id=job_id,
                ),
            )
        )


def sbatch_options(options: Optional[SlurmOptions]) -> List[str]:
    """A task's ``slurm`` mapping as sbatch options; ``extra_args`` last, as given."""
    if options is None:
        return []
    argv = []
    for flag, value in (
        ("--partition", options.partition),
        ("--account", options.account),
        ("--cpus-per-task", options.cpus),
        ("--mem", None if options.mem_mb is None else f"{options.mem_mb}M"),
        ("--time", options.time_min),
        ("--gres", options.gres),
    ):
        if value is not None:
            argv.append(f"{flag}={value}")
    argv.extend(options.extra_args)
    return argv


def _settle(job: _Job) -> float:
    return _EXIT_SETTLE_KILLED_SEC if job.killed_at is not None else _EXIT_SETTLE_SEC


def _lost(job: _Job) -> str:
    if job.state is not None and job.state.state in _TERMINAL:
        how = f"ended {job.state.describe()}"
    else:
        how = "is gone from squeue"
    said = _last_line(job.stem + ".err")
    return f"Slurm job {job.job_id} {how} without writing an exit code" + (
        f" (Slurm: {said})" if said else ""
    )


def _last_line(path: str) -> str:
    """The last line of a job's own stderr (slurmstepd's last word), at most 300 characters."""
    try:
        with open(path, "rb") as f:
            f.seek(max(0, os.fstat(f.fileno()).st_size - 4096))
            lines = f.read().decode("utf-8", "replace").strip().splitlines()
    except OSError:
        return ""
    return lines[-1].strip()[:300] if lines else ""


def _precheck(spec: AttemptSpec) -> Optional[str]:
    # Slurm would run a job whose --chdir is missing in /tmp instead: refused here, as the
    # local runner refuses it (the directory is on the shared filesystem).
    if not spec.argv or not spec.argv[0]:
        return "empty command"
    if not os.path.exists(spec.cwd):
        return f"cwd does not exist: {spec.cwd}"
    if not os.path.isdir(spec.cwd):
        return f"cwd is not a directory: {spec.cwd}"
    return None


def _write_wrapper(layout: RunLayout) -> None:
    try:
        os.mkdir(layout.slurm_dir, 0o700)
    except FileExistsError:
        pass
    path = layout.slurm_wrapper
    try:
        with open(path, encoding="utf-8") as f:
            if f.read() == WRAPPER:
                return
    except OSError:
        pass
    tmp = f"{path}.tmp{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o700)
    try:
        os.write(fd, WRAPPER.encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def _user() -> str:
    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        return str(os.getuid())
