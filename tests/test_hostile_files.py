"""Issue 11: one strange file never costs a run.

Each case builds the strange thing in a tmp_path next to a real buggy file (a copy of
fixtures/tp_expert_matmul.py: a DTP101 at 33:13) and runs the real CLI in a subprocess with a
timeout: no traceback, no hang, the strange file reported with its reason, the real finding
still there. Runs that need a moment patched (a file vanishing between two reads) use a small
driver that patches the engine and then calls the CLI's own main().
"""

from __future__ import annotations

import codecs
import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
BUGGY = REPO / "fixtures" / "tp_expert_matmul.py"
FINDING = (33, 13, "DTP101")  # where BUGGY's finding is

needs_posix = pytest.mark.skipif(os.name != "posix", reason="FIFOs, devices, symlinks and byte file names: POSIX")


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PLACEMENT_LINT_")}
    env.update(PYTHONPATH=str(REPO), PLACEMENT_LINT_PROGRESS="0", **extra)
    return env


def cli(cwd: Path, *args: str, timeout: float = 120, env: dict[str, str] | None = None,
        driver: str = "") -> subprocess.CompletedProcess:
    """`placement-lint ARGS` in `cwd` (after `driver`, Python code that patches the engine), with a
    timeout: a hang fails the test instead of stalling it. Never a traceback."""
    code = f"{driver}\nimport sys\nfrom placement_lint.cli import main\nmain(sys.argv[1:])\n"
    proc = subprocess.run([sys.executable, "-c", code, *args], cwd=cwd, capture_output=True, timeout=timeout,
                          env=env or _env())
    assert b"Traceback" not in proc.stderr, proc.stderr.decode(errors="replace")[-3000:]
    assert b"internal error" not in proc.stderr, proc.stderr.decode(errors="replace")[-3000:]
    proc.stdout.decode("utf-8")  # every output is valid UTF-8, whatever the file names
    return proc


def lint_json(cwd: Path, *args: str, **kw) -> tuple[subprocess.CompletedProcess, dict]:
    proc = cli(cwd, "--format", "json", *args, **kw)
    return proc, json.loads(proc.stdout)


def findings(data: dict) -> set[tuple]:
    return {(f["path"], f["line"], f["column"], f["code"]) for f in data["findings"]}


def errors(data: dict) -> dict[str, str]:
    return {e["path"]: e["message"] for e in data["errors"]}


def project(tmp_path: Path) -> Path:
    """A project directory holding real.py (the buggy fixture)."""
    root = tmp_path / "proj"
    root.mkdir()
    (root / "pyproject.toml").write_text("[project]\nname = 'p'\n")
    shutil.copy(BUGGY, root / "real.py")
    return root


REAL = ("real.py", *FINDING)


# 1. symlink loops ----------------------------------------------------------------------------------
@needs_posix
def test_symlink_loop_in_a_walked_directory(tmp_path):
    root = project(tmp_path)
    os.symlink("lb.py", root / "la.py")
    os.symlink("la.py", root / "lb.py")
    proc, data = lint_json(root, "--no-cache", ".")
    assert proc.returncode == 2  # errors: exit 2, with every other file reported
    assert REAL in findings(data)
    assert errors(data) == {p: "cannot read file: symlink loop (too many levels of symbolic links)"
                            for p in ("la.py", "lb.py")}


@needs_posix
def test_symlink_loop_named_explicitly(tmp_path):
    root = project(tmp_path)
    os.symlink("lb.py", root / "la.py")
    os.symlink("la.py", root / "lb.py")
    proc, data = lint_json(root, "--no-cache", "--no-project", "la.py", "real.py")
    assert proc.returncode == 2
    assert REAL in findings(data)
    assert errors(data) == {"la.py": "cannot read file: symlink loop (too many levels of symbolic links)"}
    assert b"No such file" not in proc.stderr


# 2. only regular files, and not too many bytes ----------------------------------------------------
@needs_posix
@pytest.mark.parametrize("how", ["walked", "explicit"])
def test_fifo_devices_and_sockets_are_refused_without_blocking(tmp_path, how):
    root = project(tmp_path)
    os.mkfifo(root / "x.py")
    os.symlink("/dev/zero", root / "zero.py")
    os.symlink("/dev/urandom", root / "urandom.py")
    sock = socket.socket(socket.AF_UNIX)
    try:
        sock.bind(str(root / "sock.py"))
        names = ["x.py", "zero.py", "urandom.py", "sock.py"]
        args = ["."] if how == "walked" else ["--no-project", *names, "real.py"]
        proc, data = lint_json(root, "--no-cache", *args, timeout=60)
    finally:
        sock.close()
    assert proc.returncode == 2
    assert REAL in findings(data)
    assert errors(data) == {
        "x.py": "cannot read file: it is a FIFO (named pipe), not a regular file; only regular files are read",
        "zero.py": "cannot read file: it is a character device, not a regular file; only regular files are read",
        "urandom.py": "cannot read file: it is a character device, not a regular file; only regular files are read",
        "sock.py": "cannot read file: it is a socket, not a regular file; only regular files are read",
    }


SWAPPED_AFTER_STAT = """
import os, stat
_stat = os.stat
def lying_stat(path, *a, **k):  # the engine's stat sees a regular file: swapped for a FIFO/device after it
    st = _stat(path, *a, **k)
    if os.fspath(path).endswith(("x.py", "zero.py")):
        return os.stat_result((stat.S_IFREG | 0o644, *tuple(st)[1:]))
    return st
os.stat = lying_stat
"""


@needs_posix
@pytest.mark.parametrize("pooled", [False, True])
def test_a_file_swapped_for_a_fifo_or_device_after_the_stat_is_still_refused(tmp_path, pooled):
    """The stat/open race through the CLI: the engine's stat says regular file, the read (in
    this process, or in a pool worker) opens without blocking and checks the descriptor."""
    root = project(tmp_path)
    shutil.copy(BUGGY, root / "twin.py")  # two files to read: enough for the pool
    os.mkfifo(root / "x.py")
    os.symlink("/dev/zero", root / "zero.py")
    driver = SWAPPED_AFTER_STAT + (POOLED if pooled else "")
    proc, data = lint_json(root, "--no-cache", "--jobs", "2" if pooled else "1", ".", driver=driver, timeout=60)
    assert proc.returncode == 2
    assert {REAL, ("twin.py", *FINDING)} <= findings(data)
    assert errors(data) == {
        "x.py": "cannot read file: it is a FIFO (named pipe), not a regular file; only regular files are read",
        "zero.py": "cannot read file: it is a character device, not a regular file; only regular files are read",
    }


@needs_posix
def test_the_reader_checks_the_descriptor_not_an_earlier_stat(tmp_path):
    """The stat/open race: a path that was a regular file when the engine stat'ed it and is a
    FIFO or /dev/zero when it is opened. read_source opens without blocking and fstats the
    descriptor: refused at once (in a child process, so a blocking open fails the timeout)."""
    os.mkfifo(tmp_path / "fifo.py")
    os.symlink("/dev/zero", tmp_path / "zero.py")
    code = textwrap.dedent("""
        from placement_lint.source_text import Unreadable, read_source
        for name in ("fifo.py", "zero.py"):
            try:
                read_source(name)
            except Unreadable as exc:
                print(name, exc)
    """)
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=30,
                         env=_env()).stdout
    assert out.splitlines() == [
        "fifo.py it is a FIFO (named pipe), not a regular file; only regular files are read",
        "zero.py it is a character device, not a regular file; only regular files are read",
    ]


def test_a_file_over_the_size_limit_is_an_error_with_its_size(tmp_path):
    root = project(tmp_path)
    (root / "huge.py").write_bytes(b"# " + b"x" * 9_998 + b"\n")  # 10,001 bytes
    proc, data = lint_json(root, "--no-cache", ".", env=_env(PLACEMENT_LINT_MAX_FILE_SIZE="8K"))
    assert proc.returncode == 2
    assert REAL in findings(data)  # 2 kB: under the limit
    assert errors(data) == {"huge.py": "cannot read file: file is 10001 bytes, over the maximum of 8192 bytes read "
                                       "per file (set max-file-size in the configuration, or PLACEMENT_LINT_MAX_FILE_SIZE, to raise it)"}


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_the_size_limit_from_the_configuration(tmp_path, jobs):
    """`max-file-size` in the configuration sets the limit (in the workers too); the environment
    variable, this invocation's word, wins over it."""
    root = project(tmp_path)
    (root / "pyproject.toml").write_text("[project]\nname = 'p'\n\n[tool.placement-lint]\nmax-file-size = \"8K\"\n")
    (root / "huge.py").write_bytes(b"# " + b"x" * 9_998 + b"\n")
    for i in range(4):  # enough bytes for the pool, when allowed
        shutil.copy(BUGGY, root / f"copy{i}.py")
    driver = "" if jobs == "1" else POOLED
    proc, data = lint_json(root, "--no-cache", "--jobs", jobs, ".", driver=driver)
    assert proc.returncode == 2
    assert REAL in findings(data)
    assert errors(data) == {"huge.py": "cannot read file: file is 10001 bytes, over the maximum of 8192 bytes read "
                                       "per file (set max-file-size in the configuration, or PLACEMENT_LINT_MAX_FILE_SIZE, to raise it)"}
    proc, data = lint_json(root, "--no-cache", "--jobs", jobs, ".", driver=driver, env=_env(PLACEMENT_LINT_MAX_FILE_SIZE="1M"))
    assert proc.returncode == 1 and errors(data) == {}


def test_a_bad_size_limit_is_a_usage_error(tmp_path):
    root = project(tmp_path)
    proc = cli(root, "--no-cache", ".", env=_env(PLACEMENT_LINT_MAX_FILE_SIZE="lots"))
    assert proc.returncode == 2
    assert b"PLACEMENT_LINT_MAX_FILE_SIZE='lots': expected a positive size in bytes" in proc.stderr


def test_a_20_mb_source_file_is_still_analysed(tmp_path):
    root = project(tmp_path)
    (root / "big.py").write_bytes(BUGGY.read_bytes() + b"#" + b"x" * 20_000_000 + b"\n")
    proc, data = lint_json(root, "--no-cache", ".", timeout=300)
    assert proc.returncode == 1, proc.stderr
    assert {REAL, ("big.py", *FINDING)} <= findings(data) and data["errors"] == []


# 3. a file that vanishes (or changes) between the pooled read and a re-read ----------------------
POOLED = """
import placement_lint.parallel as parallel
parallel.POOL_MIN_BYTES = 0  # the workers read the files: the parent reads them again for positions
"""


def _after_phase_one(action: str, early_positions: bool = False) -> str:
    """Driver code: `action` runs once the first pass is done (the first run of the rules, before
    the engine re-reads the files with findings for their positions). Phase one's own positions
    are turned off: the fast front end's (analysis/fast_parse.py: LibCST parses instead) and the
    workers' early positioning of a file that has a finding on its own
    (fact_store.alone_has_findings). Either would spare this file the re-read, which is what these
    tests exercise (a file whose finding needs the whole project's index is re-read so), unless
    `early_positions`."""
    off = ("import placement_lint.fact_store, placement_lint.cst_parse\n"
           "placement_lint.fact_store.alone_has_findings = lambda *a: False\n"
           "placement_lint.cst_parse.FAST = False\n")
    return POOLED + ("" if early_positions else off) + textwrap.dedent(f"""
        import os
        import placement_lint.engine as engine
        _real, _done = engine.judged, []
        def judged(index, config):
            if not _done:
                _done.append(1)
                {action}
            return _real(index, config)
        engine.judged = judged
    """)


@pytest.mark.parametrize("cached", [False, True])
def test_a_file_gone_before_its_positions_are_read(tmp_path, cached):
    root = project(tmp_path)
    shutil.copy(BUGGY, root / "gone.py")
    args = ["--cache-dir", str(tmp_path / "cache")] if cached else ["--no-cache"]
    proc, data = lint_json(root, "--jobs", "2", *args, ".", driver=_after_phase_one("os.remove('gone.py')"))
    assert proc.returncode == 2
    assert findings(data) == {REAL}
    assert errors(data) == {"gone.py": "cannot read file: No such file or directory"}


def test_a_file_gone_after_the_workers_positioned_it(tmp_path):
    """A file with a finding is positioned in phase one (the fast front end's tree comes with its
    positions; else the workers position a file with a finding of its own): removed after, it is
    never read again, and its finding (of the content analysed) is reported."""
    root = project(tmp_path)
    shutil.copy(BUGGY, root / "gone.py")
    proc, data = lint_json(root, "--jobs", "2", "--no-cache", ".",
                           driver=_after_phase_one("os.remove('gone.py')", early_positions=True))
    assert proc.returncode == 1, proc.stderr
    assert findings(data) == {REAL, ("gone.py", *FINDING)}
    assert errors(data) == {}


def test_a_file_changed_before_its_positions_are_read(tmp_path):
    """Facts of two contents are never mixed: the file the workers analysed must be the file read
    again (its digest), else it is an error entry."""
    root = project(tmp_path)
    shutil.copy(BUGGY, root / "moved.py")
    action = "open('moved.py', 'a').write('# edited\\n')"
    proc, data = lint_json(root, "--jobs", "2", "--cache-dir", str(tmp_path / "cache"), ".",
                           driver=_after_phase_one(action))
    assert proc.returncode == 2
    assert findings(data) == {REAL}
    assert errors(data) == {"moved.py": "cannot read file: its content changed while placement-lint ran; run again"}


def _after_lint(action: str) -> str:
    """Driver code: `action` runs after the engine returned, before the reporters and fixes (which
    read the files again: columns, fingerprints, fix edits)."""
    return textwrap.dedent(f"""
        import os
        import placement_lint.engine as engine
        _real = engine.lint
        def lint(*a, **k):
            report = _real(*a, **k)
            {action}
            return report
        engine.lint = lint
    """)


@needs_posix
@pytest.mark.parametrize("action", ["os.remove('real.py')", "os.remove('real.py'); os.mkfifo('real.py')"])
@pytest.mark.parametrize("fmt", ["text", "json", "sarif", "rdjson", "github"])
def test_reporters_survive_a_file_gone_or_replaced_by_a_fifo(tmp_path, action, fmt):
    root = project(tmp_path)
    proc = cli(root, "--no-cache", "--format", fmt, "--show-fixes", ".", driver=_after_lint(action), timeout=60)
    assert proc.returncode == 1, proc.stderr
    out = proc.stdout.decode()
    assert "real.py" in out and "DTP101" in out  # the finding is still reported


@needs_posix
@pytest.mark.parametrize("flags", [["--fix", "--unsafe-fixes"], ["--diff", "--unsafe-fixes"], ["--add-noqa"],
                                   ["--write-baseline", "base.json"]])
def test_fixes_and_baselines_survive_a_file_gone_or_replaced_by_a_fifo(tmp_path, flags):
    root = project(tmp_path)
    proc = cli(root, "--no-cache", *flags, ".", driver=_after_lint("os.remove('real.py'); os.mkfifo('real.py')"),
               timeout=60)
    assert proc.returncode in (0, 1), proc.stderr
    assert stat.S_ISFIFO(os.lstat(root / "real.py").st_mode)  # nothing written over it


# 4. file names that are not UTF-8, or hold a newline ------------------------------------------------
BAD_NAME = b"caf\xe9.py"


def _bytes_project(tmp_path: Path) -> Path:
    root = project(tmp_path)
    try:
        (root / os.fsdecode(BAD_NAME)).write_bytes(BUGGY.read_bytes())
    except (OSError, UnicodeEncodeError):  # pragma: no cover - a file system that refuses such names
        pytest.skip("the file system refuses a non-UTF-8 file name")
    return root


@needs_posix
@pytest.mark.parametrize("fmt", ["text", "concise", "json", "sarif", "github", "rdjson"])
def test_every_format_writes_a_non_utf8_file_name(tmp_path, fmt):
    root = _bytes_project(tmp_path)
    proc = cli(root, "--no-cache", "--format", fmt, ".")
    assert proc.returncode == 1, proc.stderr
    out = proc.stdout.decode("utf-8")
    assert "\\udc" not in out  # no Python surrogate escape leaks out
    expected = {
        "text": '"caf\\351.py":33:13: DTP101',
        "concise": '"caf\\351.py":33:13: DTP101',
        "github": "file=\"caf\\351.py\",line=33",
        "sarif": '"uri": "caf%E9.py"',
        "json": '"path": "\\"caf\\\\351.py\\""',
        "rdjson": '"path": "\\"caf\\\\351.py\\""',
    }[fmt]
    assert expected in out
    assert "real.py" in out


@needs_posix
def test_sarif_and_rdjson_with_a_non_utf8_name_still_match_the_official_schemas(tmp_path):
    pytest.importorskip("jsonschema")
    from test_schemas import _assert_valid, rdjson_validator, sarif_validator

    root = _bytes_project(tmp_path)
    for fmt, validator in (("sarif", sarif_validator()), ("rdjson", rdjson_validator())):
        proc = cli(root, "--no-cache", "--format", fmt, ".")
        assert proc.returncode == 1
        _assert_valid(validator, json.loads(proc.stdout))


@needs_posix
def test_a_newline_in_a_file_name_is_escaped_in_the_text_format(tmp_path):
    root = project(tmp_path)
    shutil.copy(BUGGY, root / "a\nb.py")
    os.mkfifo(root / "p\tq.py")
    proc = cli(root, "--no-cache", ".")
    assert proc.returncode == 2
    lines = proc.stdout.decode().splitlines()
    assert any(line.startswith('"a\\nb.py":33:13: DTP101 [high]') for line in lines)
    assert any(line.startswith("    \"a\\nb.py\":34: note:") for line in lines)
    assert any(line.startswith("real.py:33:13: DTP101") for line in lines)
    assert proc.stderr.decode().splitlines() == [
        '"p\\tq.py": error: cannot read file: it is a FIFO (named pipe), not a regular file; '
        'only regular files are read']
    # json keeps the name as it is: JSON escapes the newline itself
    _, data = lint_json(root, "--no-cache", ".")
    assert ("a\nb.py", *FINDING) in findings(data)


# 5. encodings as Python reads them ----------------------------------------------------------------
def test_a_latin1_coding_cookie_file_is_analysed(tmp_path):
    root = project(tmp_path)
    # non-ASCII bytes in the cookie's encoding before the finding: its column and line must follow
    body = BUGGY.read_bytes().replace(b"import torch\n", b"import torch  # caf\xe9\n", 1)
    assert b"caf\xe9" in body
    (root / "lat.py").write_bytes(b"# -*- coding: latin-1 -*-\n" + body)
    proc, data = lint_json(root, "--no-cache", ".")
    assert proc.returncode == 1, proc.stderr
    assert {REAL, ("lat.py", FINDING[0] + 1, FINDING[1], "DTP101")} <= findings(data)
    assert data["errors"] == []


def test_a_utf8_bom_file_is_analysed(tmp_path):
    root = project(tmp_path)
    (root / "bom.py").write_bytes(codecs.BOM_UTF8 + BUGGY.read_bytes())
    proc, data = lint_json(root, "--no-cache", ".")
    assert proc.returncode == 1
    assert {REAL, ("bom.py", *FINDING)} <= findings(data)


@pytest.mark.parametrize("name, data, line, column, message", [
    ("utf16.py", codecs.BOM_UTF16_LE + BUGGY.read_text().encode("utf-16-le"), 1, 1,
     "file starts with a UTF-16 byte-order mark: Python reads source files only in UTF-8 or an "
     "ASCII-compatible encoding named by a coding cookie; save it as UTF-8"),
    # no trigger token at all: the byte prefilter alone would have skipped it
    ("bad.py", b"x = 1\ny = '\xff'\n", 2, 6, "file is not valid UTF-8: invalid start byte at byte 11"),
    ("cookie.py", b"#!/usr/bin/env python\n# coding: klingon\nx = 1\n", 2, 1,
     "coding cookie: unknown encoding: klingon"),
    ("wide.py", b"# coding: utf-16\nx = 1\n", 1, 1, "coding cookie: encoding problem: utf-16 is not ASCII-compatible"),
])
@pytest.mark.parametrize("pooled", [False, True])
def test_a_file_python_cannot_decode_is_dtp000_with_the_reason(tmp_path, name, data, line, column, message, pooled):
    root = project(tmp_path)
    (root / name).write_bytes(data)
    args = ["--jobs", "2"] if pooled else []  # pooled: the workers prefilter (and decode-check) the files
    proc, out = lint_json(root, "--no-cache", *args, ".", driver=POOLED if pooled else "")
    assert proc.returncode == 1
    assert REAL in findings(out)
    dtp000 = [f for f in out["findings"] if f["path"] == name]
    assert [(f["code"], f["line"], f["column"], f["message"]) for f in dtp000] == [("DTP000", line, column, message)]


def test_fixes_write_back_in_the_files_own_encoding(tmp_path):
    root = project(tmp_path)
    body = BUGGY.read_bytes().replace(b"import torch\n", b"import torch  # caf\xe9\n", 1)
    lat = b"# -*- coding: latin-1 -*-\n" + body
    (root / "lat.py").write_bytes(lat)
    (root / "bom.py").write_bytes(codecs.BOM_UTF8 + BUGGY.read_bytes())
    proc = cli(root, "--no-cache", "--fix", "--unsafe-fixes", ".")
    assert proc.returncode == 0, proc.stderr  # every DTP101 fixed
    fixed_lat, fixed_bom = (root / "lat.py").read_bytes(), (root / "bom.py").read_bytes()
    assert fixed_lat.startswith(b"# -*- coding: latin-1 -*-\n") and b"import torch  # caf\xe9\n" in fixed_lat
    assert b"grad_placements=(Partial(),)" in fixed_lat
    assert fixed_bom.startswith(codecs.BOM_UTF8) and fixed_bom.count(codecs.BOM_UTF8) == 1
    assert b"grad_placements=(Partial(),)" in fixed_bom
    for data in (fixed_lat, fixed_bom):  # both still compile as Python reads them
        compile(data, "fixed.py", "exec")


def test_an_import_a_fix_adds_goes_below_a_shebang_and_a_coding_cookie():
    import ast

    from placement_lint.fixes import _import_line

    text = "#!/usr/bin/env python\n# -*- coding: latin-1 -*-\nx = 1\n"
    assert _import_line(ast.parse(text), text) == 3
    assert _import_line(ast.parse("x = 1\n"), "x = 1\n") == 1


# 6. an unreadable directory ------------------------------------------------------------------------
@needs_posix
def test_an_unreadable_directory_is_an_error_entry(tmp_path):
    root = project(tmp_path)
    locked = root / "locked"
    locked.mkdir()
    shutil.copy(BUGGY, locked / "inside.py")
    locked.chmod(0)
    try:
        if os.access(locked, os.R_OK):
            pytest.skip("this user reads a chmod 000 directory anyway (root)")
        proc, data = lint_json(root, "--no-cache", ".")
    finally:
        locked.chmod(0o755)
    assert proc.returncode == 2
    assert REAL in findings(data)
    assert errors(data) == {"locked": "cannot read directory: Permission denied"}


# 7. a cache that cannot lie -----------------------------------------------------------------------
def _tree_with_manifest(tmp_path: Path) -> Path:
    """A project large enough for the engine's stat manifest (more than MANIFEST_MIN_FILES)."""
    from placement_lint.engine import MANIFEST_MIN_FILES

    root = project(tmp_path)
    for i in range(MANIFEST_MIN_FILES + 1):
        (root / f"plain{i}.py").write_text(f"x = {i}\n")
    return root


def _facts_entries(cache: Path) -> list[Path]:
    return [p for p in cache.glob("*.json") if not p.name.startswith(("manifest-", "scans-"))]


def _garbage_right_shape() -> dict:
    # the old shape check's keys with the right types, and nothing usable inside
    return {"sites": [1, "x", None], "classes": [{"torch_style": True, "bare_exits": [7]}], "suppressions": {},
            "parsed": True, "mode": "", "error": None, "functions": {"f": 3}}


@pytest.mark.parametrize("damage", ["raw garbage", "edited sealed", "resealed garbage", "other key"])
def test_a_damaged_cache_entry_is_ignored_recomputed_and_overwritten(tmp_path, damage):
    root = project(tmp_path)
    (root / "second.py").write_bytes(BUGGY.read_bytes() + b"# another content, another entry\n")
    cache = tmp_path / "cache"
    args = ("--cache-dir", str(cache), ".")
    _, ref = lint_json(root, *args)
    assert REAL in findings(ref) and ("second.py", *FINDING) in findings(ref)
    entries = _facts_entries(cache)
    assert len(entries) >= 2  # (a first pass each: it positions their findings as it goes)
    donor, last = entries[0].read_bytes(), entries[-1].read_bytes()
    for e in entries:
        entry = json.loads(e.read_text())
        if damage == "raw garbage":  # an entry of the old format: the facts at the top level
            e.write_text(json.dumps(_garbage_right_shape()))
        elif damage == "edited sealed":  # one byte of the payload changed: its checksum disagrees
            e.write_bytes(e.read_bytes().replace(b'"sites":[', b'"sites":[1,', 1))
        elif damage == "resealed garbage":  # a valid checksum: the schema check still refuses it
            from placement_lint.cache import seal

            e.write_bytes(seal({"digest": entry["digest"], "mode": entry["mode"], "facts": _garbage_right_shape()}))
        else:  # another (valid, sealed) entry copied over this key: its digest or mode is not this key's
            e.write_bytes(donor if e != entries[0] else last)
    for _ in range(2):  # the damaged run, then a warm one from the rewritten entries
        proc, data = lint_json(root, *args)
        assert proc.returncode == 1, proc.stderr
        assert findings(data) == findings(ref) and data["errors"] == []
    from placement_lint.cache import FactsCache, unseal, valid_facts

    for e in entries:  # overwritten: each is whole, sealed, of the schema and for its own key
        entry = unseal(e.read_bytes())
        assert entry is not None and valid_facts(entry["facts"]) and e.name == FactsCache(cache).key(
            entry["digest"], entry["mode"]) + ".json"


def _manifest(cache: Path) -> Path:
    (path,) = cache.glob("manifest-*.json")
    return path


@pytest.mark.parametrize("bogus", ["", "0" * 40, "other file's digest"])
def test_a_bogus_manifest_digest_is_not_believed(tmp_path, bogus):
    root = _tree_with_manifest(tmp_path)
    cache = tmp_path / "cache"
    args = ("--cache-dir", str(cache), ".")
    _, ref = lint_json(root, *args)
    assert REAL in findings(ref)
    path = _manifest(cache)
    shutil.copy(BUGGY, root / "twin.py")
    lint_json(root, *args)  # twin.py now in the manifest too
    manifest = json.loads(path.read_text())
    files = manifest["files"]
    entry = files["real.py"]
    at = next(i for i, v in enumerate(entry) if isinstance(v, str))  # the content digest
    assert entry[at]  # (a candidate's)
    other = next(e[at] for p, e in files.items() if p.startswith("plain"))
    entry[at] = other if bogus == "other file's digest" else bogus
    path.write_text(json.dumps(manifest))  # (its checksum no longer matches)
    for _ in range(2):
        proc, data = lint_json(root, *args)
        assert proc.returncode == 1
        assert REAL in findings(data) and ("twin.py", *FINDING) in findings(data)


def test_a_resealed_manifest_pointing_at_a_missing_entry_is_corrected(tmp_path):
    """Even a manifest with a valid checksum is checked where it can be for free: a digest with
    no cache entry means reading the file, and the bytes' own digest wins."""
    from placement_lint.cache import seal, unseal

    root = _tree_with_manifest(tmp_path)
    cache = tmp_path / "cache"
    args = ("--cache-dir", str(cache), ".")
    lint_json(root, *args)
    path = _manifest(cache)
    payload = unseal(path.read_bytes())
    payload["files"]["real.py"][4] = "f" * 40
    path.write_bytes(seal(payload))
    proc, data = lint_json(root, *args)
    assert REAL in findings(data)
    assert "real.py" not in unseal(path.read_bytes())["files"]  # forgotten: read next time
    proc, data = lint_json(root, *args)
    assert REAL in findings(data)


def test_a_file_rewritten_with_its_old_size_and_mtime_is_seen(tmp_path):
    """mtime and size alone would miss this edit (cp -p, rsync -t, a tool restoring mtimes): the
    manifest also keys on ctime and inode."""
    root = _tree_with_manifest(tmp_path)
    args = ("--cache-dir", str(tmp_path / "cache"), ".")
    lint_json(root, *args)
    real = root / "real.py"
    st = real.stat()
    data = real.read_bytes()
    same_size = data.replace(b".to_local()", b".to_lokal()")  # no longer a bare to_local(): no finding
    assert len(same_size) == len(data) and same_size != data
    real.write_bytes(same_size)
    os.utime(real, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert real.stat().st_mtime_ns == st.st_mtime_ns and real.stat().st_size == st.st_size
    _, after = lint_json(root, *args)
    assert not any(f[0] == "real.py" for f in findings(after))
