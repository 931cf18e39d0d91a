"""End-to-end behaviour of the static engine through the real CLI and `engine.lint`."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
from click.testing import CliRunner

from placement_lint.cli import cli as cli_main

BUG = textwrap.dedent(
    """
    from torch.distributed.tensor import DTensor, Replicate, Shard, distribute_tensor

    def f(x, w, mesh):
        x = DTensor.from_local(x, mesh, [Replicate()])
        w = distribute_tensor(w, mesh, [Shard(0)])
        h = x.to_local()
        return h @ w.to_local().t()
    """
)
BUG_LINE = 7


def run(args, cwd):
    import os

    runner = CliRunner()
    old = os.getcwd()
    os.chdir(cwd)
    try:
        res = runner.invoke(cli_main, args, catch_exceptions=False)
    finally:
        os.chdir(old)
    return res


#: torchtitan's NoParallel shape: the output hook returns a bare to_local()
LEAKY_NO_PARALLEL = textwrap.dedent(
    """
        from torch.distributed.tensor.parallel import ParallelStyle

        class NoParallel(ParallelStyle):
            def __init__(self, *, use_local_output=True):
                self.use_local_output = use_local_output

            @staticmethod
            def _prepare_output_fn(use_local_output, mod, outputs, device_mesh):
                return outputs.to_local() if use_local_output else outputs
    """
)


def write(tmp_path, files):
    for name, src in files.items():
        p = tmp_path / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(src)


def test_parse_error_is_dtp000_and_other_files_still_analysed(tmp_path):
    write(tmp_path, {"bad.py": "def f(:\n    x.to_local()\n", "good.py": BUG})
    res = run(["--format", "json", "--no-cache", "."], tmp_path)
    assert res.exit_code == 1
    data = json.loads(res.output)
    codes = {(f["path"], f["code"]) for f in data["findings"]}
    assert ("bad.py", "DTP000") in codes and ("good.py", "DTP101") in codes


def test_undecodable_file_is_dtp000(tmp_path):
    (tmp_path / "latin.py").write_bytes(b"x = '\xe9'  # to_local\n")
    res = run(["--no-cache", "."], tmp_path)
    assert res.exit_code == 1 and "DTP000" in res.output and "UTF-8" in res.output


@pytest.mark.parametrize(
    "comment",
    [
        "  # placement-lint: ignore[DTP101]",
        "  # placement-lint: ignore[to-local-without-grad-placements]",
        "  # placement-lint: ignore",
        "  # noqa: DTP101",
        "  # noqa",
    ],
)
def test_inline_suppression(tmp_path, comment):
    lines = BUG.splitlines()
    lines[BUG_LINE - 1] += comment
    write(tmp_path, {"m.py": "\n".join(lines) + "\n"})
    res = run(["--no-cache", "m.py"], tmp_path)
    assert res.exit_code == 0, res.output


def test_suppression_on_the_line_above_and_other_codes_do_not_suppress(tmp_path):
    lines = BUG.splitlines()
    lines.insert(BUG_LINE - 1, "    # placement-lint: ignore[DTP101]")
    write(tmp_path, {"above.py": "\n".join(lines) + "\n"})
    assert run(["--no-cache", "above.py"], tmp_path).exit_code == 0
    lines = BUG.splitlines()
    lines[BUG_LINE - 1] += "  # noqa: DTP201"
    write(tmp_path, {"other.py": "\n".join(lines) + "\n"})
    assert run(["--no-cache", "other.py"], tmp_path).exit_code == 1


def test_select_ignore_min_confidence_and_per_file_ignores(tmp_path):
    write(tmp_path, {"pkg/m.py": BUG, "tests/t.py": BUG})
    assert run(["--no-cache", "--ignore", "DTP101", "."], tmp_path).exit_code == 0
    assert run(["--no-cache", "--select", "DTP2", "."], tmp_path).exit_code == 0
    assert run(["--no-cache", "--select", "to-local-without-grad-placements", "."], tmp_path).exit_code == 1
    (tmp_path / "pyproject.toml").write_text(
        '[tool.placement-lint]\nper-file-ignores = { "tests/**" = ["DTP101"] }\n'
    )
    res = run(["--no-cache", "--format", "json", "."], tmp_path)
    paths = {f["path"] for f in json.loads(res.output)["findings"]}
    assert paths == {"pkg/m.py"}


def test_min_confidence_low_shows_more(tmp_path):
    write(tmp_path, {"m.py": "def f(x):\n    y = x.to_local()\n    return y * 2 + 1\n"})
    # placement unknown, returned: low
    assert run(["--no-cache", "m.py"], tmp_path).exit_code == 0
    res = run(["--no-cache", "--min-confidence", "low", "m.py"], tmp_path)
    assert res.exit_code == 1 and "[low]" in res.output


def test_gitignore_respected_by_default(tmp_path):
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    write(tmp_path, {".gitignore": "gen/\n", "gen/m.py": BUG})
    assert run(["--no-cache", "."], tmp_path).exit_code == 0
    assert run(["--no-cache", "--no-respect-gitignore", "."], tmp_path).exit_code == 1


def test_cross_file_style_applied_in_a_file_without_trigger_tokens(tmp_path):
    """Phase two: the applying file mentions no static token, only the style's name."""
    write(
        tmp_path,
        {
            "proj/__init__.py": "",
            "proj/styles.py": textwrap.dedent(
                """
                from torch.distributed.tensor.parallel import ParallelStyle

                class KeepReplicated(ParallelStyle):
                    def _prepare_output_fn(self, mod, outputs, mesh):
                        return outputs.to_local()
                """
            ),
            "proj/plan.py": textwrap.dedent(
                """
                from proj.styles import KeepReplicated

                PLAN = {
                    "layers.0.moe.router.gate": KeepReplicated(),
                    "layers.1.moe.router.gate": KeepReplicated(use_local_output=False),
                }
                """
            ),
        },
    )
    res = run(["--no-cache", "--format", "json", "."], tmp_path)
    found = [(f["path"], f["line"], f["code"]) for f in json.loads(res.output)["findings"]]
    assert found == [("proj/plan.py", 5, "DTP102")]
    # alone, the style file reports at the hook (no use site among the files analysed), as a low
    # hazard note: whether it bites depends on where the style is applied
    res = run(["--no-cache", "--format", "json", "--min-confidence", "low", "proj/styles.py"], tmp_path)
    found = [(f["path"], f["line"], f["code"], f["confidence"]) for f in json.loads(res.output)["findings"]]
    assert found == [("proj/styles.py", 6, "DTP102", "low")]


def test_cache_hit_gives_identical_findings_and_skips_parsing(tmp_path, monkeypatch):
    write(tmp_path, {"m.py": BUG})
    first = run(["--format", "json", "--cache-dir", str(tmp_path / "c"), "."], tmp_path)
    import placement_lint.facts as facts

    def boom(*a, **k):
        raise AssertionError("parsed despite a warm cache")

    monkeypatch.setattr(facts, "file_facts", boom)
    second = run(["--format", "json", "--cache-dir", str(tmp_path / "c"), "."], tmp_path)
    strip = lambda out: {k: v for k, v in json.loads(out).items() if k != "stats"}  # noqa: E731
    assert strip(first.output) == strip(second.output)


def test_module_entry_point_runs_without_traceback_on_missing_path(tmp_path):
    res = subprocess.run([sys.executable, "-m", "placement_lint", "does/not/exist"], cwd=tmp_path, capture_output=True, text=True)
    assert res.returncode == 2
    assert "Traceback" not in res.stderr and "does/not/exist" in res.stderr


def test_only_changed_reports_findings_on_changed_lines_only(tmp_path):
    def git(*args):
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)

    git("init", "-q")
    git("config", "user.email", "t@example.com")
    git("config", "user.name", "t")
    write(tmp_path, {"old.py": BUG})
    git("add", "old.py")
    git("commit", "-qm", "base")
    # a second, new bug in the committed file, and an untracked file with a bug
    write(tmp_path, {"old.py": BUG + "\n\ndef g(y, mesh):\n    y = DTensor.from_local(y, mesh, [Replicate()])\n    return y.to_local()\n", "new.py": BUG})
    res = run(["--no-cache", "--format", "json", "--only-changed", "HEAD", "."], tmp_path)
    found = sorted((f["path"], f["line"]) for f in json.loads(res.output)["findings"])
    assert found == [("new.py", BUG_LINE), ("old.py", 13)]
    assert run(["--no-cache", "--only-changed", "no-such-rev", "."], tmp_path).exit_code == 2


def test_project_style_resolved_through_an_absolute_import_of_a_package_reexport(tmp_path):
    """torchtitan-style: `from pkg.distributed import NoParallel`, the class defined in a submodule
    and re-exported by the package; another class of the same name lives elsewhere."""
    style = LEAKY_NO_PARALLEL
    write(
        tmp_path,
        {
            "pkg/__init__.py": "",
            "pkg/distributed/__init__.py": "from pkg.distributed.tensor_parallel import NoParallel\n",
            "pkg/distributed/tensor_parallel.py": style,
            "pkg/experiments/other.py": "class NoParallel:\n    pass\n",
            "pkg/models/moe/parallelize.py": textwrap.dedent(
                """
                from torch.distributed.tensor.parallel import parallelize_module
                from pkg.distributed import NoParallel

                def apply_moe_ep_tp(model, tp_mesh):
                    for block in model.layers.values():
                        parallelize_module(block, tp_mesh, {"moe.router.gate": NoParallel(use_local_output=True)})
                """
            ),
        },
    )
    res = run(["--no-cache", "--format", "json", "."], tmp_path)
    found = [(f["path"], f["line"], f["code"], f["confidence"]) for f in json.loads(res.output)["findings"]]
    assert found == [("pkg/models/moe/parallelize.py", 7, "DTP102", "medium")]


def test_warm_run_reads_no_unchanged_file_and_sees_an_edit(tmp_path, monkeypatch):
    import os

    import placement_lint.engine as engine
    import placement_lint.fact_store as fact_store

    # enough files for the engine to use its stat manifest (a handful are simply read)
    write(tmp_path, {"m.py": BUG, **{f"plain{i}.py": "x = 1\n" for i in range(engine.MANIFEST_MIN_FILES + 1)}})
    cache = str(tmp_path / "c")
    first = run(["--format", "json", "--cache-dir", cache, "."], tmp_path)
    reads = []
    real = fact_store.read_bytes
    monkeypatch.setattr(fact_store, "read_bytes", lambda p: reads.append(p) or real(p))
    second = run(["--format", "json", "--cache-dir", cache, "."], tmp_path)
    assert reads == []  # neither the candidate nor the skipped file was read again
    strip = lambda out: json.loads(out)["findings"]  # noqa: E731
    assert strip(first.output) == strip(second.output) and strip(first.output)
    # an edit changes mtime/size: that file is read and re-analysed, the finding goes away
    (tmp_path / "m.py").write_text(BUG.replace("h = x.to_local()", "h = x.to_local(grad_placements=(Partial(),))"))
    os.utime(tmp_path / "m.py", ns=(1, 1))
    third = run(["--format", "json", "--cache-dir", cache, "."], tmp_path)
    assert [os.path.basename(p) for p in reads] == ["m.py"]
    assert strip(third.output) == []


def test_only_changed_reports_a_use_site_when_only_the_style_hook_changed(tmp_path):
    """Editing `to_local(grad_placements=...)` back to a bare `to_local()` in a style's hook is the
    change that introduces the bug at every place the style is applied: the use site's finding
    (related location: the hook) is reported although its own lines did not change."""
    def git(*args):
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)

    hook = textwrap.dedent(
        """
        from torch.distributed.tensor import Partial
        from torch.distributed.tensor.parallel import ParallelStyle

        class NoParallel(ParallelStyle):
            @staticmethod
            def _prepare_output_fn(mod, outputs, device_mesh):
                return outputs.to_local({args})
        """
    )
    use = 'from torch.distributed.tensor.parallel import parallelize_module\nfrom pkg.styles import NoParallel\n\n\ndef apply(m, mesh):\n    parallelize_module(m, mesh, {"gate": NoParallel()})\n'
    git("init", "-q")
    git("config", "user.email", "t@example.com")
    git("config", "user.name", "t")
    write(tmp_path, {"pkg/__init__.py": "", "pkg/styles.py": hook.format(args="grad_placements=(Partial(),)"), "pkg/model.py": use})
    git("add", ".")
    git("commit", "-qm", "base")
    assert json.loads(run(["--no-cache", "--format", "json", "--only-changed", "HEAD", "."], tmp_path).output)["findings"] == []
    write(tmp_path, {"pkg/styles.py": hook.format(args="")})
    res = run(["--no-cache", "--format", "json", "--only-changed", "HEAD", "."], tmp_path)
    found = sorted((f["path"], f["line"], f["code"]) for f in json.loads(res.output)["findings"])
    assert found == [("pkg/model.py", 6, "DTP102")]


def test_torch_named_project_package_is_not_torch(tmp_path):
    """The issue's reproduction: torchtitan's NoParallel, defined in the package's
    `distributed/__init__.py`, applied to the router gate in `models/llama4/parallelize.py`. A
    package whose name starts with `torch` is the project, not torch: the use site is reported,
    and the hook no longer says that no place where it is applied was found."""
    write(tmp_path, {
        "torchtitan/__init__.py": "",
        "torchtitan/distributed/__init__.py": LEAKY_NO_PARALLEL,
        "torchtitan/models/__init__.py": "",
        "torchtitan/models/llama4/__init__.py": "",
        "torchtitan/models/llama4/parallelize.py": textwrap.dedent("""
            from torch.distributed.tensor.parallel import parallelize_module
            from torchtitan.distributed import NoParallel

            def apply_moe_ep_tp(model, tp_mesh):
                parallelize_module(model, tp_mesh, {
                    "moe.router.gate": NoParallel(),
                })
            """),
    })
    res = run(["--no-cache", "--format", "json", "--min-confidence", "low", "."], tmp_path)
    found = [(f["path"], f["line"], f["code"], f["confidence"]) for f in json.loads(res.output)["findings"]]
    assert found == [("torchtitan/models/llama4/parallelize.py", 7, "DTP102", "medium")]  # the plan entry


@pytest.mark.parametrize("enabled", [True, False])
def test_the_collector_is_paused_for_a_run_and_restored(lint_files, monkeypatch, enabled):
    """engine.lint pauses CPython's cyclic collector (the main process keeps millions of acyclic
    objects) and leaves it as it found it, also when the run raises."""
    import gc

    from placement_lint import engine

    seen = []
    real = engine.judged

    def spy(*args, **kwargs):
        seen.append(gc.isenabled())
        return real(*args, **kwargs)

    monkeypatch.setattr(engine, "judged", spy)
    (gc.enable if enabled else gc.disable)()
    try:
        report = lint_files({"m.py": BUG})
        assert report.findings and seen and not any(seen)
        assert gc.isenabled() is enabled
        monkeypatch.setattr(engine, "judged", lambda *a, **k: 1 / 0)
        with pytest.raises(ZeroDivisionError):
            lint_files({"m.py": BUG})
        assert gc.isenabled() is enabled
    finally:
        gc.enable()


def test_a_worker_with_the_collector_paused_collects_after_each_batch(monkeypatch):
    """parallel._tracked: the youngest generation (everything since the last batch) once a batch."""
    import gc

    from placement_lint import parallel

    calls = []
    monkeypatch.setattr(parallel.gc, "collect", lambda generation=2: calls.append(generation))
    gc.disable()
    try:
        assert parallel._tracked(lambda items: [x * 2 for x in items], [1, 2], [0, 1], None) == [2, 4]
    finally:
        gc.enable()
    assert calls == [0]
    parallel._tracked(lambda items: items, [1], [0], None)  # the collector running: left to itself
    assert calls == [0]


def test_the_check_command_restores_the_collector(tmp_path, monkeypatch):
    """`check` keeps the collector paused through its report, then leaves it as it was."""
    import gc

    from placement_lint import reporters

    seen = []
    real = reporters.render
    monkeypatch.setattr(reporters, "render", lambda *a, **k: seen.append(gc.isenabled()) or real(*a, **k))
    (tmp_path / "m.py").write_text(BUG)
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli_main, ["check", "--no-cache", "m.py"])
    assert result.exit_code == 1, result.output
    assert seen == [False] and gc.isenabled()
