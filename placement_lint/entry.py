"""Console-script entry point with a fast path for the pre-commit case.

A pre-commit hook runs `placement-lint FILE...` on the files a commit touches. Most of them mention
no DTensor API at all, so the answer ("All checks passed!") is decided by the byte prefilter alone;
importing click and the CLI would cost twice the interpreter's own start-up. The fast path answers
without them, and only where it is certain to print what the full CLI would:

* the arguments are `[check] FILE...`, each an existing `.py`/`.pyi` file (explicit files are
  linted even where `exclude`/.gitignore name them, so those cannot matter), with no option
  except ones that cannot change a clean run's output (`--no-cache`, `--jobs N`, `--exit-zero`,
  `--no-respect-gitignore`, `--quiet`);
* no placement-lint config file applies (config may change the output format or be invalid);
* no file mentions a trigger token (a file that does is analysed by the full CLI).

Anything else, including any doubt, falls through to `placement_lint.cli.main`.
`PLACEMENT_LINT_NO_FASTPATH=1` turns the fast path off (tests compare the two).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

_CONFIG_NAMES = (".placement-lint.toml", "placement-lint.toml")
#: `check` flags that change nothing in the output of a run without candidate files
_NEUTRAL_FLAGS = ("--no-cache", "--exit-zero", "--no-respect-gitignore")


def _config_applies(start: str) -> bool:
    """True if config discovery (config.find_config_file) could find something from `start` up."""
    directory = start
    while True:
        for name in _CONFIG_NAMES:
            if os.path.isfile(os.path.join(directory, name)):
                return True
        pyproject = os.path.join(directory, "pyproject.toml")
        if os.path.isfile(pyproject):
            try:
                with open(pyproject, "rb") as fh:
                    data = fh.read()
            except OSError:
                return True  # let the full CLI report it
            if b"placement-lint" in data and _has_tool_table(data):
                return True
        parent = os.path.dirname(directory)
        if parent == directory:
            return False
        directory = parent


def _has_tool_table(data: bytes) -> bool:
    """Whether a pyproject.toml that names us has a [tool.placement-lint] table (a project that
    merely depends on placement-lint has none). Unparsable: say yes, the full CLI reports it."""
    try:
        import tomllib
    except ImportError:  # Python 3.10
        import tomli as tomllib
    try:
        tool = tomllib.loads(data.decode("utf-8")).get("tool", {})
    except (ValueError, UnicodeDecodeError):
        return True
    return not isinstance(tool, dict) or "placement-lint" in tool


def fast_exit_code(argv: Sequence[str]) -> int | None:
    """0 when every file is decided clean by the prefilter alone, else None (use the full CLI)."""
    if os.environ.get("PLACEMENT_LINT_NO_FASTPATH"):
        return None
    args = list(argv)
    if args and args[0] == "check":
        args = args[1:]
    quiet = False
    files: list[str] = []
    i = 0
    while i < len(args):
        a = args[i]
        if a in _NEUTRAL_FLAGS:
            pass
        elif a in ("-q", "--quiet"):
            quiet = True
        elif a in ("-j", "--jobs") and i + 1 < len(args) and args[i + 1].isdigit():
            i += 1
        elif a.startswith("--jobs=") and a[len("--jobs="):].isdigit():
            pass
        elif a.startswith("-") or not a.endswith((".py", ".pyi")):
            return None
        else:
            files.append(a)
        i += 1
    args = files
    if not args:
        return None
    from placement_lint.prefilter import might_match

    for path in args:
        try:
            if not os.path.isfile(path):
                return None
            with open(path, "rb") as fh:
                data = fh.read()
        except OSError:
            return None
        if might_match(data):
            return None
    if _config_applies(os.getcwd()):
        return None
    if quiet:  # --quiet drops the summary line, and a clean run has nothing else
        return 0
    try:
        sys.stdout.write("All checks passed!\n")
        sys.stdout.flush()
    except BrokenPipeError:  # as the full CLI: stdout closed early, stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 2
    return 0


def main(argv: Sequence[str] | None = None) -> None:
    """Exits with 0 (clean), 1 (findings) or 2 (error), like `placement_lint.cli.main`."""
    code = fast_exit_code(sys.argv[1:] if argv is None else argv)
    if code is not None:
        sys.exit(code)
    from placement_lint.cli import main as cli_main

    cli_main(argv)
