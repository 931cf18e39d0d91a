"""Applying fixes: `check --fix` (safe fixes), `--unsafe-fixes` (also the unsafe ones), `--diff`
(show, write nothing), `--add-noqa` (suppress what is reported, at the reported line).

A fix is a list of edits ({line, column, end_line, end_column, content}: 1-based, columns in
characters, end exclusive) plus the names it needs (`imports`: [[module, name]]). Before any
reporter sees a fix, `complete_imports` adds the edit that binds a missing name (after the
module's last top-level import), so SARIF and rdjson suggestions carry it too. Edits are applied
from the end of the file backwards; one overlapping an edit already taken is skipped (the next
run picks it up). Writes are atomic (a temporary file in the same directory, then a rename) and
keep the file's mode and its encoding (a coding cookie's, a UTF-8 BOM kept); a second run finds
nothing left to change. Files are read as the engine reads them (source_text): a file that is gone,
not a regular file or undecodable by now gets no fix.
"""

from __future__ import annotations

import ast
import difflib
import os
from typing import Any, Iterable

from placement_lint.errors import UsageError


def _read(path: str) -> str | None:
    """The file's text as the engine decoded it (newlines as they are), or None."""
    from placement_lint.source_text import Undecodable, Unreadable, decode, read_source

    try:
        return decode(read_source(path))
    except (Unreadable, Undecodable):
        return None


def _module_level(text: str) -> str:
    """`text` with each top-level def and class reduced to a one-line stub on its own line
    (`def name(): pass`), its decorators and body blank, every line where it was: what
    complete_imports reads is module-level (imports, names bound, the docstring), and the full
    AST of a big file costs about a hundred bytes per byte of source (2.3 GB for 20 MB)."""
    import re

    from placement_lint.regions import all_blocks

    header = re.compile(r"(async[ \t]+def|def|class)[ \t]+(\w+)")
    parts: list[str] = []
    lines = 0
    for start, block, _ in all_blocks(text):
        parts.append("\n" * max(0, start - 1 - lines))
        rows = block.split("\n")
        first = next((i for i, row in enumerate(rows) if row.strip() and not row.lstrip().startswith(("#", "@"))), None)
        found = header.match(rows[first]) if first is not None else None
        if found is None:
            parts.append(block)
        else:
            stub = f"class {found.group(2)}: pass" if found.group(1) == "class" else f"def {found.group(2)}(): pass"
            parts.append("\n" * first + stub + "\n" * (block.count("\n") - first))
        lines = start - 1 + block.count("\n")
    parts.append("\n" * max(0, text.count("\n") - lines))  # (comments and blank lines after the last)
    return "".join(parts)


def _bound_names(tree: ast.Module) -> set[str]:
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.ImportFrom):
            names.update(a.asname or a.name for a in node.names)
        elif isinstance(node, ast.Import):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            for t in node.targets if isinstance(node, ast.Assign) else [node.target]:
                names.update(n.id for n in ast.walk(t) if isinstance(n, ast.Name))
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
    return names


def _header_lines(text: str) -> int:
    """How many of the first two lines are a shebang or a coding cookie: an import goes below
    them (a cookie pushed to line 3 no longer counts, and the file would be read as UTF-8)."""
    import re

    n = 0
    for i, row in enumerate(text.split("\n", 2)[:2]):
        if (i == 0 and row.startswith("#!")) or re.match(r"^[ \t\f]*#.*?coding[:=][ \t]*[-\w.]+", row):
            n = i + 1
    return n


def _import_line(tree: ast.Module, text: str = "") -> int:
    """1-based line before which a new top-level import goes: after the last top-level import
    (or the module docstring / `from __future__` imports when there is none), never above a
    shebang or coding cookie."""
    after = header = _header_lines(text)
    for i, node in enumerate(tree.body):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            after = node.end_lineno or node.lineno
        elif i == 0 and isinstance(node, ast.Expr) and isinstance(getattr(node, "value", None), ast.Constant) \
                and isinstance(node.value.value, str):
            after = node.end_lineno or node.lineno
        elif after > header:
            break
    return after + 1


def _keyword_edit(lines: list[str], spec: dict) -> dict | None:
    """The edit adding a keyword argument before a call's closing parenthesis at (line, column)
    of a file's `lines` (split on "\\n"): `, name=value` after other arguments (a trailing comma
    taken into account), `name=value` in an empty call."""
    line, col = spec["line"], spec["column"]
    if not 1 <= line <= len(lines) or col < 1 or lines[line - 1][col - 1:col] != ")":
        return None
    # what precedes the parenthesis, blank lines skipped (only its last character matters)
    before, k = lines[line - 1][: col - 1].rstrip(), line - 1
    while not before and k > 0:
        k -= 1
        before = lines[k].rstrip()
    sep = "" if before.endswith(("(", ",")) else ", "
    if before.endswith(","):
        sep = " "
    return {"line": line, "column": col, "end_line": line, "end_column": col, "content": sep + spec["text"]}


def complete_imports(findings: Iterable[Any]) -> None:
    """Turn each fix into plain edits the reporters can show: a keyword to add becomes an edit
    (reading the call), and the names the fix needs that the file does not bind get an import."""
    findings = list(findings)
    texts: dict[str, str | None] = {}
    split: dict[str, list[str]] = {}

    def text_of(path: str) -> str | None:
        if path not in texts:
            texts[path] = _read(path)
        return texts[path]

    for f in findings:
        spec = (f.fix or {}).pop("add_keyword", None) if f.fix else None
        if spec is not None:
            text = text_of(f.path)
            if text is not None and f.path not in split:
                split[f.path] = text.split("\n")
            edit = _keyword_edit(split[f.path], spec) if text is not None else None
            if edit is None:
                f.fix = None  # the call is not where the facts say: no fix rather than a wrong one
            else:
                f.fix.setdefault("edits", []).append(edit)
    # per file, once: its tree, the names it binds, where an import goes, the edit per needed
    # name (a file with thousands of findings is not re-walked per finding)
    files: dict[str, tuple[ast.Module, set[str], int] | None] = {}
    extends: dict[tuple[str, str, str], dict | None] = {}
    for f in findings:
        fix = f.fix or {}
        needs = fix.get("imports") or []
        if not needs or fix.get("imports_done"):
            continue
        if f.path not in files:
            text = text_of(f.path)
            tree = None
            for source in (_module_level(text), text) if text is not None else ():
                try:
                    tree = ast.parse(source)
                    break
                except (SyntaxError, ValueError, RecursionError, MemoryError):
                    continue  # (a stub that does not parse: the whole text, as before)
            files[f.path] = (tree, _bound_names(tree), _import_line(tree, text or "")) if tree is not None else None
        known = files[f.path]
        if known is None:
            continue
        tree, bound, line = known
        for module, name in needs:
            if name in bound:
                continue
            if (f.path, module, name) not in extends:
                extends[f.path, module, name] = _extend_edit(tree, module, name, text_of(f.path) or "")
            extend = extends[f.path, module, name]
            fix.setdefault("edits", []).append(dict(extend) if extend else {"line": line, "column": 1, "end_line": line,
                                                                            "end_column": 1, "content": f"from {module} import {name}\n"})
        fix["imports_done"] = True


def _extend_edit(tree: ast.Module, module: str, name: str, text: str) -> dict | None:
    """`, name` after the last name of a top-level `from module import ...` (no star), if any."""
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.module == module and not node.level \
                and node.names and node.names[-1].name != "*" and getattr(node.names[-1], "end_lineno", None):
            last = node.names[-1]
            row = text.split("\n")[last.end_lineno - 1] if text else ""
            col = len(row.encode("utf-8")[: last.end_col_offset].decode("utf-8", errors="replace")) + 1
            return {"line": last.end_lineno, "column": col, "end_line": last.end_lineno, "end_column": col,
                    "content": f", {name}"}
    return None


def applicable(f: Any, unsafe: bool) -> bool:
    fix = f.fix or {}
    return bool(fix.get("edits")) and (fix.get("applicability") == "safe" or unsafe)


def _offsets(text: str) -> list[int]:
    starts, pos = [0], 0
    for line in text.split("\n")[:-1]:
        pos += len(line) + 1
        starts.append(pos)
    return starts


def apply_edits(text: str, edits: list[dict]) -> tuple[str, int]:
    """(new text, edits applied). Identical edits (two findings wanting the same import) count once."""
    starts = _offsets(text)

    def at(line: int, column: int) -> int:
        if line - 1 >= len(starts):
            return len(text)
        return min(starts[line - 1] + column - 1, len(text))

    spans = sorted({(at(e["line"], e["column"]), at(e["end_line"], e["end_column"]), e["content"]) for e in edits},
                   key=lambda s: (s[0], s[1]), reverse=True)
    out, applied, floor = text, 0, len(text) + 1
    for start, end, content in spans:
        if end > floor or (end == floor and start < end):
            continue  # overlaps an edit already applied
        out = out[:start] + content + out[end:]
        floor = start
        applied += 1
    return out, applied


def write_atomic(path: str, text: str) -> None:
    """Replace the file's text with `text`, in the encoding the file is in now (its coding
    cookie's, UTF-8 with its BOM kept). UsageError if that cannot be done."""
    from placement_lint.source_text import Undecodable, Unreadable, detect_encoding, read_source

    try:
        st = os.stat(path)
        data = text.encode(detect_encoding(read_source(path)))  # ('utf-8-sig' writes the BOM)
    except OSError as exc:
        raise UsageError(f"{path}: cannot write the fix: {exc.strerror or exc}") from None
    except (Unreadable, Undecodable) as exc:
        raise UsageError(f"{path}: cannot write the fix: {exc}") from None
    except UnicodeEncodeError as exc:
        raise UsageError(f"{path}: cannot write the fix: the fixed text cannot be encoded in {exc.encoding}") from None
    tmp = os.path.join(os.path.dirname(os.path.abspath(path)), f".{os.path.basename(path)}.placement-lint.tmp")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
        os.chmod(tmp, st.st_mode & 0o7777)
        os.replace(tmp, path)
    except OSError as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise UsageError(f"{path}: cannot write the fix: {exc.strerror or exc}") from None


def plan(findings: Iterable[Any], unsafe: bool) -> dict[str, tuple[str, str, int]]:
    """{path: (old text, new text, fixes applied)} for the files the fixes change."""
    by_path: dict[str, list[Any]] = {}
    for f in findings:
        if applicable(f, unsafe):
            by_path.setdefault(f.path, []).append(f)
    out = {}
    for path, fs in by_path.items():
        old = _read(path)
        if old is None:
            continue
        new, _ = apply_edits(old, [e for f in fs for e in f.fix["edits"]])
        if new != old:
            out[path] = (old, new, len(fs))
    return out


def diff(changes: dict[str, tuple[str, str, int]]) -> str:
    parts = []
    for path, (old, new, _n) in sorted(changes.items()):
        from placement_lint.reporters import quote_path

        parts.extend(difflib.unified_diff(old.splitlines(keepends=True), new.splitlines(keepends=True),
                                          fromfile=quote_path(f"a/{path}"), tofile=quote_path(f"b/{path}")))
    return "".join(parts)


def noqa_changes(findings: Iterable[Any]) -> dict[str, tuple[str, str, int]]:
    """--add-noqa: `# placement-lint: ignore[CODES]` at the end of each reported line (codes of
    one line merged; a line with a placement-lint comment already gets its codes added)."""
    import re

    by_path: dict[str, dict[int, set[str]]] = {}
    for f in findings:
        if f.code == "DTP000":
            continue
        by_path.setdefault(f.path, {}).setdefault(f.line, set()).add(f.code)
    out = {}
    pat = re.compile(r"#\s*placement-lint:\s*ignore\[([^\]]*)\]")
    for path, lines in by_path.items():
        old = _read(path)
        if old is None:
            continue
        rows = old.split("\n")
        for line, codes in lines.items():
            if not 1 <= line <= len(rows):
                continue
            row = rows[line - 1]
            body = row.rstrip("\r")
            cr = row[len(body):]
            m = pat.search(body)
            if m:
                have = [c.strip() for c in m.group(1).split(",") if c.strip()]
                merged = have + sorted(c for c in codes if c not in have)
                body = body[:m.start(1)] + ", ".join(merged) + body[m.end(1):]
            else:
                body = f"{body}  # placement-lint: ignore[{', '.join(sorted(codes))}]"
            rows[line - 1] = body + cr
        new = "\n".join(rows)
        if new != old:
            out[path] = (old, new, len(lines))
    return out
