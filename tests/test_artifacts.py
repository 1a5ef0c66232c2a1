"""Output collection and ORCH_CONTEXT, on real files."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
import threading
from pathlib import Path
from typing import Dict, FrozenSet, List, Optional, Sequence, Tuple

import pytest

from orch.artifacts import (
    Collected,
    collect_outputs,
    match_outputs,
    resolve_artifacts_dir,
    write_context,
)
from orch.layout import RunLayout

REPO = Path(__file__).resolve().parent.parent


def _write(root: Path, rel: str, data: str = "") -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(data or f"content of {rel}\n")
    return path


def _tree(root: Path) -> Dict[str, str]:
    """Relative posix path -> text of every file below root."""
    return {
        p.relative_to(root).as_posix(): p.read_text()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture()
def cwd(tmp_path: Path) -> Path:
    root = tmp_path / "work"
    for rel in (
        "dist/app.bin",
        "dist/lib/core.so",
        "dist/lib/deep/x.json",
        "report.json",
        "notes.txt",
        "a/b/one.txt",
        "a/x/b/two.txt",
        "a/x/y/b/three.txt",
        "a/b/skip.md",
        "src/conf/settings.json",
        ".hidden/secret.json",
        ".env",
    ):
        _write(root, rel)
    return root


def _collect(
    cwd: Path, tmp_path: Path, patterns: Sequence[str], extra: Optional[str] = None
) -> Collected:
    return collect_outputs(patterns, str(cwd), str(tmp_path / "run" / "artifacts"), extra, "t1")


def _run_tree(tmp_path: Path) -> Dict[str, str]:
    return _tree(tmp_path / "run" / "artifacts" / "t1")


# --------------------------------------------------------------------------- matching


@pytest.mark.parametrize(
    ("patterns", "expected"),
    [
        (["dist/**"], ["dist"]),
        (["dist"], ["dist"]),
        (
            ["**/*.json"],
            [
                ".hidden/secret.json",
                "dist/lib/deep/x.json",
                "report.json",
                "src/conf/settings.json",
            ],
        ),
        (["a/**/b/*.txt"], ["a/b/one.txt", "a/x/b/two.txt", "a/x/y/b/three.txt"]),
        (["a/*/b/*.txt"], ["a/x/b/two.txt"]),
        (["*.js?n", "not?es.txt"], ["report.json"]),
        (["[nr]*.*"], ["notes.txt", "report.json"]),
        (["[!nr]*"], [".env", ".hidden", "a", "dist", "src"]),
        (["./dist/lib/", "dist/lib/deep/x.json"], ["dist/lib"]),
        (["**"], ["."]),
    ],
)
def test_match_patterns(cwd: Path, patterns: List[str], expected: List[str]) -> None:
    result = match_outputs(patterns, str(cwd))
    assert result.paths == expected
    assert result.errors == []


def test_match_records_patterns_that_match_nothing(cwd: Path) -> None:
    result = match_outputs(["report.json", "missing/*.txt", "**/*.nope"], str(cwd))
    assert result.paths == ["report.json"]
    assert result.missing == ["missing/*.txt", "**/*.nope"]


def test_match_refuses_absolute_and_parent_patterns(cwd: Path) -> None:
    result = match_outputs(["/etc/passwd", "../work/report.json", "a/../../x"], str(cwd))
    assert result.paths == []
    assert result.errors == [
        "pattern '/etc/passwd': absolute patterns are not allowed",
        "pattern '../work/report.json': '..' is not allowed",
        "pattern 'a/../../x': '..' is not allowed",
    ]


def test_double_star_does_not_descend_through_symlinked_directories(
    cwd: Path, tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    _write(outside, "leak.json")
    (cwd / "out_link").symlink_to(outside)
    (cwd / "loop").symlink_to(cwd)
    result = match_outputs(["**/*.json"], str(cwd))
    assert not any(p.startswith(("out_link", "loop")) for p in result.paths)


# --------------------------------------------------------------------------- collecting


def test_collects_nested_globs_with_size_and_sha256(cwd: Path, tmp_path: Path) -> None:
    got = _collect(cwd, tmp_path, ["dist/**", "**/*.json", "a/**/b/*.txt"])
    expected_rels = [
        ".hidden/secret.json",
        "a/b/one.txt",
        "a/x/b/two.txt",
        "a/x/y/b/three.txt",
        "dist/app.bin",
        "dist/lib/core.so",
        "dist/lib/deep/x.json",
        "report.json",
        "src/conf/settings.json",
    ]
    assert [a["path"] for a in got.artifacts] == expected_rels
    assert got.errors == [] and got.missing_outputs == []
    task_root = tmp_path / "run" / "artifacts" / "t1"
    assert got.artifact_paths == [str(task_root / rel) for rel in expected_rels]
    for artifact in got.artifacts:
        data = (cwd / str(artifact["path"])).read_bytes()
        assert artifact["size"] == len(data)
        assert artifact["sha256"] == hashlib.sha256(data).hexdigest()
        assert (task_root / str(artifact["path"])).read_bytes() == data
    assert not (task_root / "a/b/skip.md").exists()


def test_directory_copied_whole_with_private_modes(cwd: Path, tmp_path: Path) -> None:
    (cwd / "dist" / "empty").mkdir()
    got = _collect(cwd, tmp_path, ["dist"])
    task_root = tmp_path / "run" / "artifacts" / "t1"
    assert sorted(_tree(task_root)) == ["dist/app.bin", "dist/lib/core.so", "dist/lib/deep/x.json"]
    assert (task_root / "dist" / "empty").is_dir()
    assert len(got.artifacts) == 3
    for path in got.artifact_paths:
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(task_root / "dist" / "lib").st_mode) == 0o700
    assert stat.S_IMODE(os.stat(task_root).st_mode) == 0o700


def test_pattern_matching_nothing_is_recorded_not_fatal(cwd: Path, tmp_path: Path) -> None:
    got = _collect(cwd, tmp_path, ["report.json", "coverage/**"])
    assert got.missing_outputs == ["coverage/**"]
    assert [a["path"] for a in got.artifacts] == ["report.json"]
    assert got.errors == []


def test_extra_dir_relative_to_workdir_and_absolute(cwd: Path, tmp_path: Path) -> None:
    workdir = tmp_path / "wd"
    workdir.mkdir()
    got = collect_outputs(
        ["report.json", "dist/lib"],
        str(cwd),
        str(tmp_path / "run" / "artifacts"),
        "out/arts",
        "t1",
        workdir=str(workdir),
    )
    assert got.errors == []
    expected = {"report.json", "dist/lib/core.so", "dist/lib/deep/x.json"}
    assert set(_tree(workdir / "out" / "arts" / "t1")) == expected
    assert set(_run_tree(tmp_path)) == expected
    # artifact_paths always name the run's copy
    assert all(p.startswith(str(tmp_path / "run" / "artifacts" / "t1")) for p in got.artifact_paths)

    absolute = tmp_path / "abs_arts"
    got = _collect(cwd, tmp_path, ["notes.txt"], extra=str(absolute))
    assert got.errors == []
    assert _tree(absolute / "t1") == {"notes.txt": "content of notes.txt\n"}


def test_resolve_artifacts_dir() -> None:
    assert resolve_artifacts_dir(None, "/w") is None
    assert resolve_artifacts_dir(".orch/artifacts", "/w") == "/w/.orch/artifacts"
    assert resolve_artifacts_dir("/abs/arts", "/w") == "/abs/arts"


def test_extra_dir_keeps_executable_bit(cwd: Path, tmp_path: Path) -> None:
    os.chmod(cwd / "dist" / "app.bin", 0o755)
    _collect(cwd, tmp_path, ["dist/app.bin"], extra=str(tmp_path / "arts"))
    assert os.stat(tmp_path / "arts" / "t1" / "dist" / "app.bin").st_mode & 0o100
    # ...while the run directory stays private
    run_copy = tmp_path / "run" / "artifacts" / "t1" / "dist" / "app.bin"
    assert stat.S_IMODE(os.stat(run_copy).st_mode) == 0o600


# --------------------------------------------------------------------------- symlinks


def test_symlink_outside_cwd_is_not_followed(cwd: Path, tmp_path: Path) -> None:
    secret = _write(tmp_path, "secret.txt", "top secret\n")
    (cwd / "dist" / "leak.txt").symlink_to(secret)
    (cwd / "escape").symlink_to(tmp_path)
    (cwd / "relative_escape").symlink_to("../secret.txt")
    got = _collect(cwd, tmp_path, ["dist", "escape", "relative_escape"])
    assert got.errors == [
        "dist/leak.txt: symlink points outside the task's cwd, not collected",
        "escape: symlink points outside the task's cwd, not collected",
        "relative_escape: symlink points outside the task's cwd, not collected",
    ]
    copied = _run_tree(tmp_path)
    assert "top secret\n" not in copied.values()
    assert "dist/app.bin" in copied
    assert not any(os.path.islink(p) for p in got.artifact_paths)


def test_symlink_inside_cwd_copies_target_content(cwd: Path, tmp_path: Path) -> None:
    (cwd / "latest.json").symlink_to("report.json")
    (cwd / "dist" / "conf").symlink_to(cwd / "src" / "conf")
    (cwd / "dangling").symlink_to(cwd / "nowhere")
    got = _collect(cwd, tmp_path, ["latest.json", "dist", "dangling"])
    copied = _run_tree(tmp_path)
    assert copied["latest.json"] == "content of report.json\n"
    assert copied["dist/conf/settings.json"] == "content of src/conf/settings.json\n"
    assert not os.path.islink(tmp_path / "run" / "artifacts" / "t1" / "latest.json")
    assert got.errors == ["dangling: broken symlink, not collected"]


def test_symlink_loop_is_recorded_not_followed(cwd: Path, tmp_path: Path) -> None:
    (cwd / "a" / "up").symlink_to(cwd / "a")
    (cwd / "a" / "b" / "root").symlink_to(cwd)
    got = _collect(cwd, tmp_path, ["a"])
    assert got.errors == [
        "a/b/root: symlink loop, not collected",
        "a/up: symlink loop, not collected",
    ]
    assert "a/x/y/b/three.txt" in _run_tree(tmp_path)


# --------------------------------------------------------------------------- containment


@pytest.mark.parametrize("task_id", ["../evil", "..", "a/b", "", ".hidden", "/abs", "x\0y"])
def test_crafted_task_id_writes_nothing(cwd: Path, tmp_path: Path, task_id: str) -> None:
    run_arts = tmp_path / "run" / "artifacts"
    run_arts.mkdir(parents=True)
    before = sorted(p for p in tmp_path.rglob("*"))
    got = collect_outputs(["report.json"], str(cwd), str(run_arts), str(tmp_path / "x"), task_id)
    assert got.artifacts == [] and got.artifact_paths == []
    assert got.errors == [f"task id {task_id!r} is not a safe name, nothing collected"]
    assert sorted(p for p in tmp_path.rglob("*")) == before


def test_collection_never_copies_its_own_destination(cwd: Path) -> None:
    # Home inside the task's cwd, as with the default .orch: `**` must not feed on itself.
    run_arts = cwd / ".orch" / "runs" / "r1" / "artifacts"
    extra = cwd / ".orch" / "artifacts"
    _write(cwd, ".orch/runs/r1/state.json", "{}")
    for _ in range(2):
        got = collect_outputs(["**"], str(cwd), str(run_arts), str(extra), "t1")
        assert got.errors == []
    rels = [str(a["path"]) for a in got.artifacts]
    assert "report.json" in rels
    assert not any(r.startswith((".orch/runs/r1/artifacts", ".orch/artifacts")) for r in rels)
    assert ".orch/runs/r1/state.json" in rels
    # the caller can keep the whole home out
    got = collect_outputs(["**"], str(cwd), str(run_arts), None, "t1", exclude=[str(cwd / ".orch")])
    rels = [str(a["path"]) for a in got.artifacts]
    assert "report.json" in rels and not any(r.startswith(".orch") for r in rels)


# --------------------------------------------------------------------------- failures


def test_fifo_is_recorded_and_never_blocks(cwd: Path, tmp_path: Path) -> None:
    os.mkfifo(cwd / "dist" / "pipe")
    os.mkfifo(cwd / "fifo.json")
    got = _collect(cwd, tmp_path, ["dist", "*.json"])
    assert got.errors == [
        "dist/pipe: not a regular file or directory, not collected",
        "fifo.json: not a regular file or directory, not collected",
    ]
    assert "report.json" in _run_tree(tmp_path)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_unreadable_file_is_recorded(cwd: Path, tmp_path: Path) -> None:
    os.chmod(cwd / "report.json", 0)
    os.chmod(cwd / "a" / "x", 0)
    try:
        got = _collect(cwd, tmp_path, ["*.json", "notes.txt", "a"])
        walked = _collect(cwd, tmp_path, ["a/**/*.txt"])
    finally:
        os.chmod(cwd / "report.json", 0o644)
        os.chmod(cwd / "a" / "x", 0o755)
    assert got.errors == ["a/x: Permission denied", "report.json: Permission denied"]
    assert [a["path"] for a in got.artifacts] == ["a/b/one.txt", "a/b/skip.md", "notes.txt"]
    assert walked.errors == ["a/x: Permission denied"]
    assert [a["path"] for a in walked.artifacts] == ["a/b/one.txt"]


def test_files_vanishing_during_collection_never_crash(cwd: Path, tmp_path: Path) -> None:
    churn = cwd / "churn"
    churn.mkdir()
    stop = threading.Event()

    def churner() -> None:
        i = 0
        while not stop.is_set():
            sub = churn / f"d{i % 7}"
            for path in (sub / "f.txt", churn / f"f{i % 13}.txt"):
                if path.exists():
                    shutil.rmtree(sub) if path.parent == sub else path.unlink()
                else:
                    _write(cwd, str(path.relative_to(cwd)))
            i += 1

    thread = threading.Thread(target=churner)
    thread.start()
    errors: List[str] = []
    try:
        for _ in range(25):
            errors += _collect(cwd, tmp_path, ["churn", "churn/**/*.txt", "report.json"]).errors
    finally:
        stop.set()
        thread.join()
    assert all(e.endswith(": No such file or directory") for e in errors), errors
    assert "report.json" in _run_tree(tmp_path)


def test_missing_cwd_is_recorded(tmp_path: Path) -> None:
    got = _collect(tmp_path / "absent", tmp_path, ["report.json"])
    assert got.missing_outputs == ["report.json"]
    assert got.errors == [f"task cwd {tmp_path / 'absent'} is not a directory, nothing collected"]


def test_unwritable_extra_dir_is_recorded_run_copy_kept(cwd: Path, tmp_path: Path) -> None:
    blocker = _write(tmp_path, "blocker")  # a file where a directory is needed
    got = _collect(cwd, tmp_path, ["report.json"], extra=str(blocker / "arts"))
    assert len(got.errors) == 1
    assert got.errors[0].startswith(f"cannot write to {blocker / 'arts'}: ")
    assert [a["path"] for a in got.artifacts] == ["report.json"]


# --------------------------------------------------------------------------- replacement


def test_rerun_replaces_previous_artifacts_whole(cwd: Path, tmp_path: Path) -> None:
    extra = str(tmp_path / "arts")
    _collect(cwd, tmp_path, ["*.json", "*.txt"], extra=extra)
    assert set(_run_tree(tmp_path)) == {"report.json", "notes.txt"}
    (cwd / "notes.txt").unlink()
    (cwd / "report.json").write_text("v2\n")
    got = _collect(cwd, tmp_path, ["*.json", "*.txt"], extra=extra)
    assert _run_tree(tmp_path) == {"report.json": "v2\n"}
    assert _tree(tmp_path / "arts" / "t1") == {"report.json": "v2\n"}
    assert got.missing_outputs == ["*.txt"]
    # nothing matched at all: the latest attempt's outputs count, so nothing remains
    got = _collect(cwd, tmp_path, ["nothing/*"], extra=extra)
    assert _run_tree(tmp_path) == {} and got.artifact_paths == []
    assert sorted(os.listdir(tmp_path / "run" / "artifacts")) == ["t1"]  # no temp leftovers
    assert sorted(os.listdir(tmp_path / "arts")) == ["t1"]


def test_reader_never_sees_a_mix_of_old_and_new(cwd: Path, tmp_path: Path) -> None:
    old = frozenset(f"old{i}.txt" for i in range(20))
    new = frozenset(f"new{i}.txt" for i in range(20))
    for name in old | new:
        _write(cwd, name)
    task_root = str(tmp_path / "run" / "artifacts" / "t1")
    complete: List[FrozenSet[str]] = []
    partial: List[Tuple[List[str], bool]] = []
    stop = threading.Event()

    def reader() -> None:
        while not stop.is_set():
            try:
                fd = os.open(task_root, os.O_RDONLY | os.O_DIRECTORY)
            except FileNotFoundError:
                continue
            try:
                names = frozenset(os.listdir(fd))
                if names in (old, new):
                    complete.append(names)
                    continue
                # Partial is acceptable only for a tree already swapped out (being removed):
                # a tree still in place must be whole.
                try:
                    current: Optional[int] = os.stat(task_root).st_ino
                except FileNotFoundError:
                    current = None
                partial.append((sorted(names), current != os.fstat(fd).st_ino))
            finally:
                os.close(fd)

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for i in range(30):
            _collect(cwd, tmp_path, ["old*.txt"] if i % 2 else ["new*.txt"])
    finally:
        stop.set()
        thread.join()
    assert old in complete and new in complete
    assert not [names for names, _ in partial if old & set(names) and new & set(names)]
    assert all(swapped_out for _, swapped_out in partial), partial[:3]


def test_stale_temp_tree_of_a_dead_collector_is_removed(cwd: Path, tmp_path: Path) -> None:
    run_arts = tmp_path / "run" / "artifacts"
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    stale = run_arts / f".t1.tmp-{int(dead.stdout)}-abcd1234"
    _write(stale, "half.txt")
    _collect(cwd, tmp_path, ["report.json"])
    assert sorted(os.listdir(run_arts)) == ["t1"]


# --------------------------------------------------------------------------- streaming

_RSS_SCRIPT = r"""
import json, os, resource, sys
from orch.artifacts import collect_outputs
def peak_kib():
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak // 1024 if sys.platform == "darwin" else peak
cwd, arts = sys.argv[1], sys.argv[2]
collect_outputs(["warmup.bin"], cwd, arts, None, "warm")
before = peak_kib()
got = collect_outputs(["big.bin"], cwd, arts, None, "big")
print(json.dumps({"growth_kib": peak_kib() - before, "artifacts": got.artifacts,
                  "errors": got.errors}))
"""


def test_large_file_streams_with_bounded_memory(tmp_path: Path) -> None:
    size = 100 * 1024 * 1024
    cwd = tmp_path / "work"
    cwd.mkdir()
    (cwd / "warmup.bin").write_bytes(b"w" * (4 * 1024 * 1024))
    block = bytes(range(256)) * 4096  # 1 MiB, not all zeros
    digest = hashlib.sha256()
    with open(cwd / "big.bin", "wb") as out:
        for _ in range(size // len(block)):
            out.write(block)
            digest.update(block)
    proc = subprocess.run(
        [sys.executable, "-c", _RSS_SCRIPT, str(cwd), str(tmp_path / "arts")],
        capture_output=True,
        text=True,
        cwd=str(REPO),
        check=True,
    )
    result = json.loads(proc.stdout)
    assert result["errors"] == []
    assert result["artifacts"] == [{"path": "big.bin", "size": size, "sha256": digest.hexdigest()}]
    assert result["growth_kib"] < 30 * 1024, result
    assert os.path.getsize(tmp_path / "arts" / "big" / "big.bin") == size


# --------------------------------------------------------------------------- context


def test_write_context_content_and_mode(tmp_path: Path) -> None:
    run_dir = tmp_path / "runs" / "r1"
    arts = run_dir / "artifacts"
    path = RunLayout(str(run_dir)).context("summarize")
    os.makedirs(os.path.dirname(path))
    deps = {
        "analyze": {
            "status": "SUCCESS",
            "exit_code": 0,
            "stdout_path": str(run_dir / "logs" / "analyze.out.log"),
            "stderr_path": str(run_dir / "logs" / "analyze.err.log"),
            "artifact_paths": [str(arts / "analyze" / "result.json")],
            "attempts": 2,
            "cmd": ["python3", "x"],
        },
        "lint": {"status": "FAILED", "exit_code": None, "stdout_path": "/o", "stderr_path": "/e"},
    }
    write_context(path, "r1", "summarize", 3, str(run_dir), str(arts), deps)
    assert path == str(run_dir / "context" / "summarize.json")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    with open(path, encoding="utf-8") as f:
        document = json.load(f)
    assert document == {
        "schema_version": 1,
        "run_id": "r1",
        "task_id": "summarize",
        "attempt": 3,
        "run_dir": str(run_dir),
        "artifacts_dir": str(arts),
        "dependencies": {
            "analyze": {
                "status": "SUCCESS",
                "exit_code": 0,
                "stdout_path": str(run_dir / "logs" / "analyze.out.log"),
                "stderr_path": str(run_dir / "logs" / "analyze.err.log"),
                "artifacts_dir": str(arts / "analyze"),
                "artifact_paths": [str(arts / "analyze" / "result.json")],
            },
            "lint": {
                "status": "FAILED",
                "exit_code": None,
                "stdout_path": "/o",
                "stderr_path": "/e",
                "artifacts_dir": str(arts / "lint"),
                "artifact_paths": [],
            },
        },
    }
    # rewritten atomically for the next attempt, no temp files left behind
    write_context(path, "r1", "summarize", 4, str(run_dir), str(arts), {})
    with open(path, encoding="utf-8") as f:
        assert json.load(f)["attempt"] == 4
    assert os.listdir(run_dir / "context") == ["summarize.json"]
