"""Output formats.  `render` returns what goes to stdout; `render_errors` what goes to stderr.

Kept cheap to import (the CLI imports it for `FORMATS`): anything a single format needs
(json, hashlib, the rule registry) is imported inside that format's function.

File names are bytes to the OS; a name that is not valid UTF-8 reaches us as a str with lone
surrogates (os.fsdecode), which no output encoding can write, and a name may hold a newline.
Every format writes such names (see `quote_path`): text, concise, github and stderr show an unusual
name git-style, in double quotes with C escapes; json and rdjson keep a valid name as it is (JSON
escapes its control characters) and give a non-UTF-8 one git-style too; SARIF percent-encodes the
name's bytes in its URIs. Any other text holding such bytes (a message citing the file) shows
them as `\\xNN`. No output ever holds a lone surrogate.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from typing import Any, Callable

from placement_lint.findings import Confidence, Finding, Report

FORMATS = ("text", "concise", "json", "sarif", "github", "rdjson")

TOOL_NAME = "placement-lint"
# No project site exists yet; the package index page is the one stable address.
INFORMATION_URI = "https://pypi.org/project/placement-lint/"

_ANSI = {"bold": "\033[1m", "red": "\033[31m", "yellow": "\033[33m", "cyan": "\033[36m", "dim": "\033[2m", "reset": "\033[0m"}
_CONF_COLOR = {Confidence.HIGH: "red", Confidence.MEDIUM: "yellow", Confidence.LOW: "cyan"}


# file names ---------------------------------------------------------------------------------
#: a name holding one of these is shown quoted: C0/C1 controls and DEL, line and paragraph
#: separators (they break lines too), the quoting's own `"` and `\`, and lone surrogates
_UNUSUAL = re.compile("[\x00-\x1f\x7f-\x9f\"\\\\\u2028\u2029\ud800-\udfff]")
_SURROGATE = re.compile("[\ud800-\udfff]")
_C_ESCAPES = {"\a": "\\a", "\b": "\\b", "\t": "\\t", "\n": "\\n", "\v": "\\v", "\f": "\\f", "\r": "\\r",
              '"': '\\"', "\\": "\\\\"}


def _raw(ch: str) -> bytes:
    """The bytes a character of a file name stands for (a lone surrogate: the undecodable byte)."""
    try:
        return ch.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return ch.encode("utf-8", "surrogatepass")


def quote_path(path: str) -> str:
    """`path` as git shows an unusual name (core.quotePath off): unchanged unless it holds a control
    character, a line separator, `"`, `\\` or bytes that are not UTF-8; then in double quotes with
    C escapes (\\n, \\t, \\", \\\\) and octal escapes for other such bytes (\\351). Reversible, and
    never mistaken for a plain name (those never start with `"`)."""
    if not _UNUSUAL.search(path):
        return path
    out = []
    for ch in path:
        if ch in _C_ESCAPES:
            out.append(_C_ESCAPES[ch])
        elif _UNUSUAL.match(ch):
            out.extend(f"\\{b:03o}" for b in _raw(ch))
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _json_path(path: str) -> str:
    """A path in a JSON format: as it is when it is valid Unicode, else `quote_path`'s form."""
    return quote_path(path) if not path.isascii() and _SURROGATE.search(path) else path


def escape_text(text: str) -> str:
    """`text` with every lone surrogate (a byte a file name or file did not decode) as `\\xNN`."""
    if text.isascii() or not _SURROGATE.search(text):
        return text
    return "".join(c if not _SURROGATE.match(c) else "".join(f"\\x{b:02x}" for b in _raw(c)) for c in text)


def _clean(obj: Any, key: str | None = None) -> Any:
    """A JSON tree with no lone surrogate: "path" values as `_json_path`, other text `escape_text`."""
    if isinstance(obj, str):
        return (_json_path(obj) if key == "path" else escape_text(obj)) if not obj.isascii() else obj
    if isinstance(obj, dict):
        return {escape_text(k) if isinstance(k, str) else k: _clean(v, k) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v, key) for v in obj]
    return obj


def render(report: Report, fmt: str, *, show_fixes: bool = False, color: bool = False,
           runtime_summary: dict[str, int] | None = None) -> str:
    """`report` in format `fmt` (one of FORMATS); text ends with a newline unless empty.

    `runtime_summary` (from `confirm`: what the runtime check saw) becomes a line before the text
    summary, a top-level `runtime_summary` object in json and the run's `properties` in sarif;
    the other formats leave it out.
    """
    renderers: dict[str, Callable[..., str]] = {
        "text": lambda: _text(report, show_fixes=show_fixes, color=color, summary=True, runtime=runtime_summary),
        "concise": lambda: _text(report, show_fixes=False, color=color, summary=False),
        "json": lambda: _json(dict(report.to_json(), **({"runtime_summary": runtime_summary} if runtime_summary else {}))),
        "sarif": lambda: _json(_sarif(report, runtime_summary)),
        "github": lambda: _github(report),
        "rdjson": lambda: _json(_rdjson(report)),
    }
    try:
        renderer = renderers[fmt]
    except KeyError:
        raise ValueError(f"unknown output format {fmt!r}: expected one of {', '.join(FORMATS)}") from None
    return renderer()


def render_errors(report: Report, fmt: str = "text") -> str:
    """Tool errors (unreadable files, ...) as `path: error: message` lines, for stderr.

    In the github format they are also workflow commands, so they annotate the run.
    """
    lines = []
    for err in report.errors:
        path, message = err.get("path") or "", escape_text(err.get("message", ""))
        if fmt == "github":
            props = f" file={_gh_property(_json_path(path))}" if path else ""
            lines.append(f"::error{props}::{_gh_data(f'{TOOL_NAME}: {message}')}")
        else:
            lines.append(f"{quote_path(path)}: error: {message}" if path else f"error: {message}")
    return "".join(line + "\n" for line in lines)


def render_statistics(report: Report, fmt: str = "text") -> str:
    """Finding counts per rule, most frequent first (`--statistics`)."""
    counts = Counter((f.code, f.slug) for f in report.findings)
    rows = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    if fmt == "json":
        return _json([{"code": code, "slug": slug, "count": n} for (code, slug), n in rows])
    width = max((len(str(n)) for n in counts.values()), default=1)
    return "".join(f"{n:>{width}}\t{code}\t{slug}\n" for (code, slug), n in rows)


def _json(data: Any) -> str:
    import json

    return json.dumps(_clean(data), indent=2) + "\n"


# text / concise --------------------------------------------------------------------------
def _paint(text: str, style: str, color: bool) -> str:
    return f"{_ANSI[style]}{text}{_ANSI['reset']}" if color else text


def _count(n: int, noun: str, plural: str = "") -> str:
    return f"{n} {noun if n == 1 else plural or noun + 's'}"


def runtime_line(rs: dict[str, int]) -> str:
    """`runtime: 2 harnesses, 37 sites reached, 41 parameters checked, 5/39 static findings reached`."""
    return (f"runtime: {_count(rs.get('harnesses', 0), 'harness', 'harnesses')}, "
            f"{_count(rs.get('sites_reached', 0), 'site')} reached, "
            f"{_count(rs.get('parameters_checked', 0), 'parameter')} checked, "
            f"{rs.get('static_findings_reached', 0)}/{_count(rs.get('static_findings', 0), 'static finding')} reached")


def summary_line(report: Report) -> str:
    if not report.findings:
        return "All checks passed!"
    counts = Counter(f.confidence for f in report.findings)
    parts = [f"{counts[Confidence.HIGH]} high", f"{counts[Confidence.MEDIUM]} medium"]
    if counts[Confidence.LOW]:
        parts.append(f"{counts[Confidence.LOW]} low")
    n = len(report.findings)
    return f"Found {n} finding{'' if n == 1 else 's'} ({', '.join(parts)})."


#: evidence keys shown first, in this order, with a label each
_EVIDENCE_KEYS = (
    ("mesh_dim", "mesh dim"),
    ("per_rank_grad_norms", "grad norm per rank"),
    ("max_rel_diff", "max rel diff"),
    ("forward_placements", "forward"),
    ("declared_grad_placements", "grad label"),
    ("call_count", "calls"),
    ("module", "module"),
    ("name", "parameter"),
    ("torch_version", "torch"),
)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    if isinstance(value, dict):
        return " / ".join(_fmt(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return "(" + ", ".join(_fmt(v) for v in value) + ")"
    return str(value)


def short_evidence(evidence: Any, limit: int = 240) -> str:
    """One line of runtime evidence: what was seen (per-rank norms, the difference, the mesh dim,
    the placements), most telling first; a string evidence's first line as it is."""
    if evidence is None:
        return ""
    if isinstance(evidence, dict):
        if isinstance(evidence.get("summary"), str):
            text = evidence["summary"]
        else:
            parts = [evidence["detail"]] if isinstance(evidence.get("detail"), str) else []
            for key, label in _EVIDENCE_KEYS:
                value = evidence.get(key)
                if key == "declared_grad_placements" and key in evidence and value is None:
                    value = "default (the forward placement)"
                if value not in (None, "", [], {}):
                    parts.append(f"{label} {_fmt(value)}")
            text = "; ".join(parts)
    else:
        text = str(evidence)
    text = text.strip().splitlines()[0] if text.strip() else ""
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _text(report: Report, *, show_fixes: bool, color: bool, summary: bool, runtime: dict[str, int] | None = None) -> str:
    lines = []
    for f in report.findings:
        conf = _paint(f"[{f.confidence}]", _CONF_COLOR[f.confidence], color)
        loc = _paint(f"{quote_path(f.path)}:{f.line}:{f.column}:", "bold", color)
        lines.append(f"{loc} {_paint(f.code, 'bold', color)} {conf} {f.message}")
        if not summary:
            continue
        for r in f.related:
            lines.append(f"    {quote_path(r.path)}:{r.line}: note: {r.message}")
        if f.runtime:
            verdict = f.runtime.get("verdict", "?")
            evidence = short_evidence(f.runtime.get("evidence"))
            lines.append(f"    runtime: {verdict}" + (f": {evidence}" if evidence else ""))
        if show_fixes and f.fix:
            applicability = f.fix.get("applicability")
            label = f"fix ({applicability})" if applicability else "fix"
            lines.append(f"    {label}: {f.fix.get('message') or f.fix.get('title') or 'available'}")
    if summary:
        if runtime:
            lines.append(runtime_line(runtime))
        lines.append(summary_line(report))
    return escape_text("".join(line + "\n" for line in lines))


# fix edits, shared by sarif and rdjson -------------------------------------------------------
def fix_edits(fix: dict[str, Any] | None) -> list[tuple[int, int, int, int, str]]:
    """(line, column, end_line, end_column, new text) for each edit of a fix.

    The fix shape is the one rules emit (see DTP101): `{"applicability", "message", "edits":
    [{"line", "column", "end_line", "end_column", "content"}]}`, 1-based, end exclusive.
    """
    if not isinstance(fix, dict):
        return []
    return [(e["line"], e["column"], e["end_line"], e["end_column"], e["content"]) for e in fix.get("edits") or ()]


# sarif -------------------------------------------------------------------------------------
_SARIF_LEVEL = {Confidence.HIGH: "error", Confidence.MEDIUM: "warning", Confidence.LOW: "note"}


def _artifact(path: str) -> dict[str, Any]:
    from urllib.parse import quote

    posix = path.replace(os.sep, "/")
    if os.path.isabs(path):
        from pathlib import Path

        return {"uri": Path(path).as_uri()}  # (percent-encodes os.fsencode(path): the name's bytes)
    # the name's bytes, percent-encoded: a name that is not UTF-8 keeps its bytes (%E9)
    return {"uri": quote(os.fsencode(posix), safe="/"), "uriBaseId": "%SRCROOT%"}



def _sarif_rules(findings: list[Finding]) -> list[dict[str, Any]]:
    from placement_lint.rule import all_rules

    rules = []
    known = set()
    for rule in all_rules():
        doc = rule.doc()
        summary = getattr(rule, "SUMMARY", "") or rule.SLUG
        rules.append(
            {
                "id": rule.CODE,
                "name": rule.SLUG,
                "shortDescription": {"text": summary},
                "fullDescription": {"text": doc or summary},
                "help": {"text": doc or summary, "markdown": doc or summary},
                "defaultConfiguration": {"level": "warning"},
                "properties": {"fix": rule.FIX or "none", "tags": ["dtensor", "correctness"]},
            }
        )
        known.add(rule.CODE)
    for f in findings:  # a finding from a rule not in the registry still gets an entry
        if f.code not in known:
            known.add(f.code)
            rules.append({"id": f.code, "name": f.slug, "shortDescription": {"text": f.slug}})
    return rules


def _sarif(report: Report, runtime_summary: dict[str, int] | None = None) -> dict[str, Any]:
    from pathlib import Path

    from placement_lint import __version__

    rules = _sarif_rules(report.findings)
    index = {r["id"]: i for i, r in enumerate(rules)}
    from placement_lint.fingerprint import fingerprints

    from placement_lint.columns import Lines, utf16

    lines = Lines()

    def col(path: str, line: int, column: int) -> int:  # SARIF's default columnKind: UTF-16 code units
        return utf16(lines, path, line, column)

    results = []
    for f, fp in zip(report.findings, fingerprints(report.findings)):
        result: dict[str, Any] = {
            "ruleId": f.code,
            "ruleIndex": index[f.code],
            "level": _SARIF_LEVEL[f.confidence],
            "message": {"text": f.message},
            "locations": [
                {
                    "physicalLocation": {
                        "artifactLocation": _artifact(f.path),
                        "region": {
                            "startLine": f.line,
                            "startColumn": col(f.path, f.line, f.column),
                            "endLine": f.end_line,
                            "endColumn": col(f.path, f.end_line, f.end_column),
                        },
                    },
                    **({"logicalLocations": [{"fullyQualifiedName": f.symbol}]} if f.symbol else {}),
                }
            ],
            "partialFingerprints": {"placementLint/v2": fp},
            "properties": {"confidence": str(f.confidence), **({"runtime": f.runtime} if f.runtime else {})},
        }
        if f.related:
            result["relatedLocations"] = [
                {
                    "id": i,
                    "physicalLocation": {"artifactLocation": _artifact(r.path), "region": {"startLine": r.line}},
                    "message": {"text": r.message},
                }
                for i, r in enumerate(f.related)
            ]
        edits = fix_edits(f.fix)
        if edits:
            result["fixes"] = [
                {
                    "description": {"text": (f.fix or {}).get("message") or f"Fix {f.code}"},
                    "artifactChanges": [
                        {
                            "artifactLocation": _artifact(f.path),
                            "replacements": [
                                {
                                    "deletedRegion": {"startLine": l, "startColumn": col(f.path, l, c), "endLine": el,
                                                      "endColumn": col(f.path, el, ec)},
                                    "insertedContent": {"text": text},
                                }
                                for l, c, el, ec, text in edits
                            ],
                        }
                    ],
                }
            ]
        results.append(result)
    notifications = [
        {
            "level": "error",
            "message": {"text": err.get("message", "")},
            **(
                {"locations": [{"physicalLocation": {"artifactLocation": _artifact(err["path"])}}]}
                if err.get("path")
                else {}
            ),
        }
        for err in report.errors
    ]
    return {
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [
            {
                "tool": {
                    "driver": {
                        "name": TOOL_NAME,
                        "version": __version__,
                        "informationUri": INFORMATION_URI,
                        "rules": rules,
                    }
                },
                "originalUriBaseIds": {"%SRCROOT%": {"uri": Path.cwd().as_uri().rstrip("/") + "/"}},
                "columnKind": "utf16CodeUnits",  # SARIF's default, said explicitly: columns are converted
                "invocations": [
                    {"executionSuccessful": not report.errors, "toolExecutionNotifications": notifications}
                ],
                "results": results,
                **({"properties": {"runtimeSummary": runtime_summary}} if runtime_summary else {}),
            }
        ],
    }


# github ------------------------------------------------------------------------------------
_GH_COMMAND = {Confidence.HIGH: "error", Confidence.MEDIUM: "warning", Confidence.LOW: "notice"}


def _gh_data(text: str) -> str:
    # Escaping as in @actions/core's command.ts (escapeData).
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _gh_property(text: str) -> str:
    # escapeProperty: escapeData plus the separators of the property list.
    return _gh_data(text).replace(":", "%3A").replace(",", "%2C")


def _github(report: Report) -> str:
    lines = []
    for f in report.findings:
        props = ",".join(
            f"{k}={_gh_property(str(v))}"
            for k, v in (
                ("file", _json_path(f.path.replace(os.sep, "/"))),
                ("line", f.line),
                ("col", f.column),
                ("endLine", f.end_line),
                ("endColumn", f.end_column),
                ("title", f"{f.code} {f.slug}"),
            )
        )
        lines.append(f"::{_GH_COMMAND[f.confidence]} {props}::{_gh_data(escape_text(f.message))}")
    return "".join(line + "\n" for line in lines)


# rdjson (reviewdog) --------------------------------------------------------------------------
_RD_SEVERITY = {Confidence.HIGH: "ERROR", Confidence.MEDIUM: "WARNING", Confidence.LOW: "INFO"}


def _rd_range(line: int, column: int, end_line: int, end_column: int) -> dict[str, Any]:
    return {"start": {"line": line, "column": column}, "end": {"line": end_line, "column": end_column}}


def _rdjson(report: Report) -> dict[str, Any]:
    from placement_lint.columns import Lines, utf8

    lines = Lines()

    def rng(path: str, line: int, column: int, end_line: int, end_column: int) -> dict[str, Any]:
        # reviewdog counts columns in UTF-8 bytes
        return _rd_range(line, utf8(lines, path, line, column), end_line, utf8(lines, path, end_line, end_column))

    diagnostics = []
    for f in report.findings:
        diag: dict[str, Any] = {
            "message": f.message,
            "location": {
                "path": f.path.replace(os.sep, "/"),
                "range": rng(f.path, f.line, f.column, f.end_line, f.end_column),
            },
            "severity": _RD_SEVERITY[f.confidence],
            "code": {"value": f.code},
        }
        edits = fix_edits(f.fix)
        if edits:
            diag["suggestions"] = [{"range": rng(f.path, l, c, el, ec), "text": text} for l, c, el, ec, text in edits]
        diagnostics.append(diag)
    return {
        "source": {"name": TOOL_NAME, "url": INFORMATION_URI},
        "severity": "WARNING",
        "diagnostics": diagnostics,
    }
