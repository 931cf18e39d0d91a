"""Long fuzz run (issue 11): mutants of the fixture programs and hypothesmith-generated programs
with DTensor triggers injected, each checked like the CI property tests do (tests/test_mutants.py,
tests/test_fuzz.py): file_facts in every mode never raises and returns JSON, and the whole rule
pipeline (placement_lint.lint_source, the program as its fixture's file in its package) never
raises. Prints the count, the crashes by kind and the programs per second.

    nice -n 19 .venv/bin/python bench/fuzz_long.py --count 100000 --seed 1 --save crashes/
    .venv/bin/python bench/fuzz_long.py --compare-parsers --count 20000   # the two front ends

With --compare-parsers each program is instead analysed twice, with LibCST's tree and with the
fast front end's (placement_lint/analysis/fast_parse.py), in the positions and the whole-file
modes: different facts (positions included) count as a crash kind, "facts differ". Programs LibCST
rejects (CPython may accept them) are not compared.

One process (the analysis is single-threaded; the machine is shared). A RecursionError (deep
nesting) is counted on its own: the depth guard is separate work. The smallest program of each
crash kind is kept with --save.
"""

from __future__ import annotations

import argparse
import collections
import json
import random
import signal
import sys
import tempfile
import time
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from test_fuzz import inject_triggers  # noqa: E402
from test_mutants import Donors, Projects, check_facts, fixture_programs, mutate, parse  # noqa: E402


class Timeout(Exception):
    pass


class Differ(Exception):
    """The two front ends gave different facts."""


def compare_parsers(text: str) -> None:
    from test_fast_parse import both

    data = text.encode("utf-8", "surrogatepass")
    for mode in ("positions", "full"):
        libcst, fast = both(data, mode)
        if '"error": null' in libcst and fast != libcst:
            raise Differ(mode)


def _alarm(signum, frame):
    raise Timeout()


def kind_of(exc: BaseException) -> str:
    """Exception type and the innermost frame of placement_lint or rules: one crash, one kind."""
    if isinstance(exc, RecursionError):
        return "RecursionError (deep nesting)"
    if isinstance(exc, Timeout):
        return "Timeout"
    if isinstance(exc, Differ):
        return f"facts differ (mode {str(exc)!r})"
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if "placement_lint" in f.filename or "/rules/" in f.filename]
    where = f"{Path(frames[-1].filename).name}:{frames[-1].lineno} {frames[-1].name}" if frames else "?"
    return f"{type(exc).__name__} at {where}"


def generated(n: int, seed: int) -> list[str]:
    """`n` hypothesmith programs (grammar and CST strategies), seeded."""
    import hypothesmith
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import seed as hseed
    from hypothesis import strategies as st

    out: list[str] = []

    @hseed(seed)
    @settings(max_examples=n, deadline=None, database=None, phases=[Phase.generate], suppress_health_check=list(HealthCheck))
    @given(st.one_of(hypothesmith.from_grammar(), hypothesmith.from_node()))
    def collect(program):
        out.append(program)

    collect()
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--count", type=int, default=100_000, help="programs in all")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--generated-share", type=float, default=0.1, help="share of hypothesmith programs")
    ap.add_argument("--steps", type=int, default=3, help="edits per mutant, at most")
    ap.add_argument("--timeout", type=int, default=60, help="seconds per program before it counts as a hang")
    ap.add_argument("--save", type=Path, help="folder for the smallest program of each crash kind")
    ap.add_argument("--json", type=Path, help="write the figures here")
    ap.add_argument("--progress", type=int, default=1000, help="a line on stderr every N programs")
    ap.add_argument("--compare-parsers", action="store_true", help="compare the two front ends' facts instead")
    args = ap.parse_args(argv)

    rng = random.Random(args.seed)
    programs = fixture_programs()
    donors = Donors.from_programs([t for _, t in programs])
    tmp = tempfile.TemporaryDirectory(prefix="fuzz_long_")
    projects = Projects(Path(tmp.name))
    signal.signal(signal.SIGALRM, _alarm)
    crashes: collections.Counter[str] = collections.Counter()
    smallest: dict[str, tuple[str, str]] = {}
    counts = collections.Counter()
    queue: list[str] = []
    batch = 0
    start = time.perf_counter()
    for i in range(args.count):
        if rng.random() < args.generated_share:
            if not queue:
                queue = generated(200, args.seed * 1000 + batch)
                batch += 1
            origin, path = "generated", None
            text = inject_triggers(queue.pop(), rng)
        else:
            path, src = rng.choice(programs)
            origin = "mutant"
            text = mutate(src, rng, donors, args.steps)
        counts[origin] += 1
        counts["valid"] += parse(text) is not None
        signal.alarm(args.timeout)
        try:
            if args.compare_parsers:
                compare_parsers(text)
            else:
                check_facts(text)
                projects.lint(text, path)
        except Exception as exc:  # noqa: BLE001 - every crash is a finding of this run
            kind = kind_of(exc)
            crashes[kind] += 1
            label = f"{origin} of {path.relative_to(REPO)}" if path else origin
            if kind not in smallest:
                print(f"new crash kind at program {i + 1}: {kind} ({label})", file=sys.stderr, flush=True)
            if kind not in smallest or len(text) < len(smallest[kind][1]):
                smallest[kind] = (label, text)
                if args.save:  # written at once: a long run is looked at while it goes
                    save(args.save, smallest)
        finally:
            signal.alarm(0)
        if args.progress and (i + 1) % args.progress == 0:
            el = time.perf_counter() - start
            print(f"{i + 1} programs, {el:.0f} s, {(i + 1) / el:.1f}/s, crashes {sum(crashes.values())} "
                  f"({len(crashes)} kinds)", file=sys.stderr, flush=True)
    elapsed = time.perf_counter() - start
    figures = {
        "count": args.count, "seed": args.seed, "compare_parsers": args.compare_parsers, "seconds": round(elapsed, 1),
        "programs_per_s": round(args.count / elapsed, 1), "mutants": counts["mutant"],
        "generated": counts["generated"], "valid_python": counts["valid"],
        "crashes": dict(crashes.most_common()),
    }
    print(json.dumps(figures, indent=2))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 1 if crashes else 0


def save(folder: Path, smallest: dict[str, tuple[str, str]]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for kind, (label, text) in smallest.items():
        name = "".join(c if c.isalnum() else "_" for c in kind)[:80]
        (folder / f"{name}.py").write_text(f"# {kind}\n# {label}\n{text}", errors="surrogatepass")


if __name__ == "__main__":
    sys.exit(main())
