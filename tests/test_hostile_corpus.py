"""Issue 11's hostile corpus: every strange file at once, in one directory, in one invocation.

tests/test_hostile_files.py and tests/test_hostile_code.py test each case on its own; this test
puts all of them next to real buggy files and runs the CLI once (in process and on the pool, then
again over a poisoned cache): no traceback, no hang, each problem reported for its own file, and
every real finding still there.
"""

from __future__ import annotations

import codecs
import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
BUGGY = (REPO / "fixtures" / "tp_expert_matmul.py").read_bytes()
BUG_AT = (33, 13, "DTP101")  # BUGGY's finding
HEAD = b"import torch\nfrom torch.distributed.tensor import DTensor\n\n"

pytestmark = pytest.mark.skipif(os.name != "posix", reason="FIFOs, sockets, symlinks and byte file names: POSIX")


def _deep(kind: str, n: int) -> bytes:
    """A file CPython accepts whose one expression is nested or chained `n` deep."""
    if kind == "calls":
        expr = "g(" * n + "x.to_local()" + ")" * n
    elif kind == "lists":
        expr = "[" * n + "x.to_local()" + "]" * n
    elif kind == "tuples":
        expr = "(" * n + "x.to_local()" + ",)" * n
    elif kind == "methods":
        expr = "x.to_local()" + ".f()" * n
    elif kind == "sums":
        expr = " + ".join(["x.to_local()"] * n)
    elif kind == "attrs":
        expr = "x.to_local()" + ".a" * n
    elif kind == "subscripts":
        expr = "x.to_local()" + "[0]" * n
    else:  # comprehensions
        expr = "x.to_local()"
        for i in range(n):
            expr = f"[{expr} for _{i} in y]"
    return HEAD + f"def f(x, y, g):\n    return {expr}\n".encode()


#: name -> (bytes, what the run must say of it: "finding" = its real DTP101, "error:<words>" = an
#: error entry naming the reason, "dtp000:<words>" = a DTP000 for it, "ok" = analysed, no error)
def _files() -> dict[str, tuple[bytes, str]]:
    latin1 = b"# -*- coding: latin-1 -*-\n# caf\xe9\n" + BUGGY
    files = {
        "real.py": (BUGGY, "finding"),
        "pkg/real_too.py": (BUGGY, "finding"),
        "latin1_cookie.py": (latin1, "finding:2"),
        "bom.py": (codecs.BOM_UTF8 + BUGGY, "finding"),
        "utf16.py": (codecs.BOM_UTF16_LE + BUGGY.decode().encode("utf-16-le"), "dtp000:UTF-16"),
        "bad_bytes.py": (HEAD + b"x = '\xff\xfe'\n" + b"y = x.to_local()\n", "dtp000:utf-8"),
        "attr_exit.py": (
            b"import torch\nfrom torch.distributed.tensor import Replicate, distribute_tensor\n\n"
            b"class M:\n    def __init__(self, mesh):\n"
            b"        self.k = distribute_tensor(torch.randn(4), mesh, [Replicate()]).to_local()\n\n"
            b"    def forward(self, x):\n        return x * self.k\n",
            "ok",
        ),
        "crlf_eof.py": (HEAD + b"def f(x):\r\n    return x.to_local()\r\ny = 1 + \\\r\n", "ok-or-dtp000"),
        "formfeed.py": (HEAD + b"def f(x):\n    if x:\n\x0c        return x.to_local()\n    return x\n", "ok-or-dtp000"),
        "syntax_error.py": (HEAD + b"def f(x:\n    return x.to_local()\n", "dtp000:parse"),
        "big.py": (HEAD + b"# " + b"x" * (3 * 1024 * 1024) + b"\ny = x.to_local()\n", "error:bytes"),
    }
    for kind, n in (("calls", 135), ("lists", 135), ("tuples", 135), ("methods", 157), ("sums", 314),
                    ("attrs", 400), ("subscripts", 400), ("comprehensions", 157), ("methods", 5000)):
        files[f"deep_{kind}_{n}.py"] = (_deep(kind, n), "ok-or-dtp000")
    return files


def _build(root: Path) -> dict[bytes, str]:
    """The corpus under root; returns {file name as bytes: expectation} for the special entries."""
    (root / "pkg").mkdir(parents=True)
    (root / "pyproject.toml").write_text("[project]\nname = 'hostile'\n")
    (root / "pkg" / "__init__.py").write_text("")
    for name, (data, _) in _files().items():
        (root / name).write_bytes(data)
    special = {}
    os.symlink("loop_b.py", root / "loop_a.py")
    os.symlink("loop_a.py", root / "loop_b.py")
    special[b"loop_a.py"] = special[b"loop_b.py"] = "error:symlink loop"
    os.mkfifo(root / "fifo.py")
    special[b"fifo.py"] = "error:FIFO"
    os.symlink("/dev/zero", root / "zero.py")
    special[b"zero.py"] = "error:character device"
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(root / "sock.py"))
    sock.close()
    special[b"sock.py"] = "error:socket"
    for raw in (b"caf\xe9.py", b"new\nline.py"):
        with open(os.path.join(os.fsencode(root), raw), "wb") as f:
            f.write(BUGGY)
        special[raw] = "finding"
    locked = root / "locked"
    locked.mkdir()
    (locked / "inside.py").write_bytes(BUGGY)
    os.chmod(locked, 0)
    if not os.access(locked, os.R_OK):  # root reads it anyway: then it is just another directory
        special[b"locked"] = "error:locked"
    return special


def _run(root: Path, *args: str) -> tuple[int, dict]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PLACEMENT_LINT_")}
    env.update(PYTHONPATH=str(REPO), PLACEMENT_LINT_PROGRESS="0", PLACEMENT_LINT_MAX_FILE_SIZE="2M")
    proc = subprocess.run([sys.executable, "-m", "placement_lint", "--format", "json", *args, "."], cwd=root,
                          capture_output=True, timeout=600, env=env)
    assert b"Traceback" not in proc.stderr, proc.stderr.decode(errors="replace")[-3000:]
    # 2: some files could not be read (error entries); their findings are reported all the same
    assert proc.returncode == 2, (proc.returncode, proc.stderr.decode(errors="replace")[-3000:])
    return proc.returncode, json.loads(proc.stdout.decode("utf-8"))


def _check(data: dict, special: dict[bytes, str]) -> None:
    findings: dict[str, list[tuple]] = {}
    for f in data["findings"]:
        findings.setdefault(f["path"], []).append((f["line"], f["column"], f["code"], f["message"]))
    errors = {e["path"]: e["message"] for e in data["errors"]}

    def check(shown: str, expect: str) -> None:
        got, err = findings.get(shown, []), errors.get(shown)
        if expect.startswith("finding"):
            shift = int(expect.split(":")[1]) if ":" in expect else 0
            assert (BUG_AT[0] + shift, BUG_AT[1], BUG_AT[2]) in [g[:3] for g in got], (shown, got, err)
            assert err is None, (shown, err)
        elif expect.startswith("error:"):
            assert err is not None and expect[6:].lower() in err.lower(), (shown, err)
        elif expect.startswith("dtp000:"):
            dtp000 = [g[3] for g in got if g[2] == "DTP000"]
            assert dtp000 and expect[7:].lower() in dtp000[0].lower(), (shown, got, err)
        elif expect == "ok":
            assert err is None and not [g for g in got if g[2] == "DTP000"], (shown, got, err)
        else:  # ok-or-dtp000: analysed, or refused as a finding of its own with a reason
            assert err is None, (shown, err)
            assert all(len(g[3]) > 20 for g in got if g[2] == "DTP000"), (shown, got)

    for name, (_, expect) in _files().items():
        check(name, expect)
    shown_names = set(findings) | set(errors)
    for raw, expect in special.items():
        if raw in (b"caf\xe9.py", b"new\nline.py"):
            # shown quoted (text) or as is where valid UTF-8 (JSON): found by its stem
            stem = "caf" if raw.startswith(b"caf") else "new"
            shown = next(n for n in shown_names if n.lstrip('"').startswith(stem))
        else:
            shown = raw.decode()
        check(shown, expect)


def test_every_strange_file_at_once_in_one_run(tmp_path):
    root = tmp_path / "corpus"
    special = _build(root)
    try:
        cache = tmp_path / "cache"
        _, serial = _run(root, "--jobs", "1", "--no-cache")
        _check(serial, special)
        _, pooled = _run(root, "--jobs", "2", "--cache-dir", str(cache))
        _check(pooled, special)
        assert serial["findings"] == pooled["findings"]
        # poison the cache: garbage of the right shape in every facts entry, every manifest
        # digest replaced by another's; the next run must not believe either
        poisoned = 0
        for entry in cache.rglob("*.json"):
            text = entry.read_text(errors="replace")
            entry.write_text(text.replace('"sites"', '"sites_"').replace('"digest": "', '"digest": "0'))
            poisoned += 1
        assert poisoned
        _, again = _run(root, "--jobs", "2", "--cache-dir", str(cache))
        _check(again, special)
        assert again["findings"] == serial["findings"]
    finally:
        locked = root / "locked"
        if locked.exists():
            os.chmod(locked, 0o755)
        shutil.rmtree(root, ignore_errors=True)
