"""How `merge` matches static findings to runtime sites, without a launch: synthetic `results`.

* a finding in one copy of a package matches sites in another copy when the two files have the
  same path relative to the top-level package and the same bytes (unpacked wheel vs
  site-packages); never when the bytes differ, which `confirm` warns about;
* DTP103 on a `LocalMapConfig(...)` installed on a module's config matches the local_map sites of
  that module (the assignment target names it);
* the runtime summary line / json object.
"""
import ast
import json
import textwrap
from pathlib import Path

import pytest

from placement_lint import engine, reporters
from placement_lint.config import Config
from placement_lint.findings import Confidence, Finding, Related, Report
from placement_lint.runtime import cli as runtime_cli
from placement_lint.runtime import merge

pytestmark = pytest.mark.torch_free  # merge and its helpers import no torch

MODEL = textwrap.dedent('''\
    """A module whose forward hands a replicated activation to a bare to_local()."""


    def forward(self, x):
        h = x.to_local()
        return h @ self.w
''')
LINE = 5  # `h = x.to_local()`


def site(path, line=LINE, *, id=None, api="to_local", verdict="confirmed", module="block", hook="",
         local_map=""):
    return {"id": id or f"{api}|{path}|{line}|{module}|{hook}" + (f"|local_map={local_map}" if local_map else ""),
            "api": api, "path": str(path), "line": line, "function": "forward", "module": module, "hook": hook,
            "local_map": local_map, "verdict": verdict,
            "evidence": {"mesh_dim": "tp", "max_rel_diff": 0.5 if verdict == "confirmed" else 0.0}}


def finding(path, line=LINE, code="DTP101", column=9, related=()):
    slug = {"DTP101": "to-local-without-grad-placements", "DTP102": "style-without-grad-placements",
            "DTP103": "local-map-without-grad-placements"}[code]
    return Finding(code, slug, str(path), line, column, line, column + 10, "m", Confidence.LOW,
                   related=list(related))


def package(root: Path, text: str = MODEL, name: str = "modeling") -> Path:
    """root/pkg/__init__.py, root/pkg/nn/__init__.py, root/pkg/nn/<name>.py; returns the module."""
    (root / "pkg" / "nn").mkdir(parents=True)
    (root / "pkg" / "__init__.py").write_text("")
    (root / "pkg" / "nn" / "__init__.py").write_text("")
    mod = root / "pkg" / "nn" / f"{name}.py"
    mod.write_text(text)
    return mod


def results_for(*sites, params=()):
    return [{"harness": "h.py:harness", "sites": list(sites), "params": list(params)}]


def verdicts(report):
    return [(f.code, f.path, f.line, f.runtime["verdict"]) for f in report.findings]


# --- one package, two copies ---------------------------------------------------------------------
def test_identical_installed_copy_matches_by_package_relative_path(tmp_path):
    analysed = package(tmp_path / "checkout" / "src")  # the top-level package sits deeper here
    installed = package(tmp_path / "venv" / "site-packages")
    report = Report(findings=[finding(analysed)], errors=[])
    merge.merge(report, results_for(site(installed)), str(tmp_path))
    # matched: the verdict is the site's, and the site is not reported a second time as DTP903
    assert verdicts(report) == [("DTP101", str(analysed), LINE, "confirmed")]
    assert report.findings[0].runtime["evidence"]["site"] == f"{installed}:{LINE}"


def test_same_package_path_other_contents_is_not_matched_and_warned(tmp_path, capsys, monkeypatch):
    analysed = package(tmp_path / "wheel")
    installed = package(tmp_path / "site-packages", MODEL + "# a later release\n")
    report = Report(findings=[finding(analysed)], errors=[])
    results = results_for(site(installed))
    paths = merge.path_index(report, results, str(tmp_path))
    assert paths.differ == [(str(installed), str(analysed))]
    assert paths.alias == {}
    merge.merge(report, results, str(tmp_path), paths=paths)
    # the static finding is not the site: not-reached, and the confirmed site is a runtime-only finding
    assert sorted(verdicts(report)) == [("DTP101", str(analysed), LINE, "not-reached"),
                                        ("DTP903", str(installed.relative_to(tmp_path)), LINE, "confirmed")]
    monkeypatch.delenv("PLACEMENT_LINT_QUIET", raising=False)
    runtime_cli._warn_if_copies_differ(paths)
    err = capsys.readouterr().err
    assert err.count("warning:") == 1
    assert str(installed) in err and str(analysed) in err and "other contents" in err


def test_no_warning_when_copies_are_identical(tmp_path, capsys, monkeypatch):
    analysed = package(tmp_path / "a")
    installed = package(tmp_path / "b")
    paths = merge.path_index(Report(findings=[finding(analysed)], errors=[]), results_for(site(installed)),
                             str(tmp_path))
    assert paths.alias == {str(installed): str(analysed)} and paths.differ == []
    monkeypatch.delenv("PLACEMENT_LINT_QUIET", raising=False)
    runtime_cli._warn_if_copies_differ(paths)
    assert capsys.readouterr().err == ""



def test_namespace_subpackage_inside_a_package(tmp_path):
    """pkg/components/ has no __init__.py (as torchtitan/components/): still package `pkg`."""
    copies = []
    for base in (tmp_path / "wheel", tmp_path / "venv" / "lib" / "site-packages"):
        (base / "pkg" / "components").mkdir(parents=True)
        (base / "pkg" / "__init__.py").write_text("")
        (base / "pkg" / "components" / "loss.py").write_text(MODEL)
        copies.append(base / "pkg" / "components" / "loss.py")
    analysed, installed = copies
    index = merge.PathIndex(str(tmp_path))
    assert index.package_relative(str(installed)) == "pkg/components/loss.py"
    report = Report(findings=[finding(analysed)], errors=[])
    merge.merge(report, results_for(site(installed, module="")), str(tmp_path))
    assert verdicts(report) == [("DTP101", str(analysed), LINE, "confirmed")]

def test_files_outside_a_package_match_only_by_absolute_path(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "modeling.py").write_text(MODEL)
    (tmp_path / "b" / "modeling.py").write_text(MODEL)  # same bytes, but no package to relate them
    report = Report(findings=[finding(tmp_path / "a" / "modeling.py")], errors=[])
    merge.merge(report, results_for(site(tmp_path / "b" / "modeling.py")), str(tmp_path))
    assert ("DTP101", str(tmp_path / "a" / "modeling.py"), LINE, "not-reached") in verdicts(report)


def test_other_module_with_the_same_bytes_is_not_matched(tmp_path):
    analysed = package(tmp_path / "a", name="modeling")
    installed = package(tmp_path / "b", name="other")  # same bytes, other package-relative path
    report = Report(findings=[finding(analysed)], errors=[])
    merge.merge(report, results_for(site(installed)), str(tmp_path))
    assert ("DTP101", str(analysed), LINE, "not-reached") in verdicts(report)


def test_dtp102_related_location_in_the_installed_copy(tmp_path):
    plan_src = 'def plan():\n    return {"router.gate": NoParallel()}\n'
    analysed_plan = package(tmp_path / "a", plan_src, name="plan")
    analysed_style = analysed_plan.with_name("style.py")
    analysed_style.write_text(MODEL)
    installed_plan = package(tmp_path / "b", plan_src, name="plan")
    installed_style = installed_plan.with_name("style.py")
    installed_style.write_text(MODEL)
    f = finding(analysed_plan, 2, "DTP102", related=[Related(str(analysed_style), LINE, "the hook's to_local")])
    report = Report(findings=[f], errors=[])
    # module "" and no hook: only the related location can match it
    merge.merge(report, results_for(site(installed_style, module="")), str(tmp_path))
    assert verdicts(report) == [("DTP102", str(analysed_plan), 2, "confirmed")]


def test_dtp103_decorator_form_in_the_installed_copy(tmp_path):
    src = textwrap.dedent('''\
        from torch.distributed.tensor.experimental import local_map


        @local_map(out_placements=[Replicate()], in_placements=([Replicate()],))
        def scale(x):
            return x * 2
    ''')
    analysed = package(tmp_path / "a", src, name="lm")
    installed = package(tmp_path / "b", src, name="lm")
    lm = f"{installed}:5:scale|arg0"
    s = site("/elsewhere/torch/distributed/tensor/experimental/_func_map.py", 200, local_map=lm)
    report = Report(findings=[finding(analysed, 4, "DTP103", column=2)], errors=[])
    merge.merge(report, results_for(s), str(tmp_path))
    assert verdicts(report) == [("DTP103", str(analysed), 4, "confirmed")]


def test_path_index_hashes_only_colliding_files(tmp_path, monkeypatch):
    analysed = package(tmp_path / "a")
    unrelated = package(tmp_path / "b", name="unrelated")
    digests = []
    real = merge.PathIndex.digest

    def spy(self, path):
        digests.append(path)
        return real(self, path)

    monkeypatch.setattr(merge.PathIndex, "digest", spy)
    merge.PathIndex(str(tmp_path), [str(analysed)], [str(unrelated), "<torch>"])
    assert digests == []


def test_watch_lines_add_the_copy_this_interpreter_imports(tmp_path, monkeypatch):
    analysed = package(tmp_path / "a")
    installed = package(tmp_path / "b")
    changed = package(tmp_path / "c", MODEL + "# other\n")
    report = Report(findings=[finding(analysed)], errors=[])
    monkeypatch.setattr(merge, "_import_root", lambda name: str(tmp_path / "b"))
    assert merge.watch_lines(report, str(tmp_path)) == sorted([(str(analysed), LINE), (str(installed), LINE)])
    monkeypatch.setattr(merge, "_import_root", lambda name: str(tmp_path / "c"))
    assert merge.watch_lines(report, str(tmp_path)) == [(str(analysed), LINE)]
    assert changed.exists()


# --- DTP103 on a LocalMapConfig installed on a module's config ------------------------------------
CONFIG_SRC = textwrap.dedent('''\
    from torch.distributed.tensor import Replicate
    from mylib.sharding import *  # noqa: F403  (LocalMapConfig, ShardingConfig: unresolved here)


    def set_root_sharding(config):
        config.tok_embeddings.sharding_config = ShardingConfig(
            in_src_shardings={"input": (Replicate(),)},
            out_src_shardings=(Replicate(),),
            local_map=LocalMapConfig(in_grad_placements=None),  # CASE tok_embeddings
        )


    def set_expert_sharding(config, layer_id):
        config.layers[layer_id].moe.routed_experts.sharding_config = ShardingConfig(
            in_src_shardings={"x": (Replicate(),)},
            local_map=LocalMapConfig(in_grad_placements=None),  # CASE routed_experts
        )


    def set_attention_local_map(inner_attention_cfg):
        inner_attention_cfg.sharding_config = ShardingConfig(
            in_src_shardings={"q": (Replicate(),)}, local_map=LocalMapConfig(in_grad_placements=None))  # CASE inner


    def unnamed(register):
        register(ShardingConfig(in_src_shardings={"input": (Replicate(),)},
                                local_map=LocalMapConfig(in_grad_placements=None)))  # CASE unnamed
''')


def lm_site(module, fn="forward", line=40, verdict="refuted"):
    lm = f"/site/pkg/nn/embedding.py:{line}:{fn}|arg0"
    return site("/site/pkg/protocols/module.py", 290, api="to_local", module=module, verdict=verdict, local_map=lm)


def case_lines(text):
    return {line.split("# CASE ")[1].strip(): i for i, line in enumerate(text.splitlines(), 1) if "# CASE " in line}


def test_dtp103_on_local_map_config_matches_by_assigned_module_path(tmp_path, monkeypatch):
    src = tmp_path / "sharding.py"
    src.write_text(CONFIG_SRC)
    lines = case_lines(CONFIG_SRC)
    # the static pass flags every LocalMapConfig(in_grad_placements=None) at its own line
    monkeypatch.chdir(tmp_path)
    cfg = Config(select=["DTP103"], min_confidence=Confidence.LOW)
    report = engine.lint([str(src)], cfg, use_cache=False, cwd=tmp_path)
    assert sorted(f.line for f in report.findings) == sorted(lines.values()), verdicts(report)
    sites = [
        lm_site("tok_embeddings", verdict="refuted"),
        lm_site("layers.1.moe.routed_experts", fn="experts_fwd", verdict="confirmed"),
        lm_site("layers.2.moe.routed_experts", fn="experts_fwd", verdict="refuted"),
        lm_site("layers.0.attention.inner_attention", fn="attn", verdict="inconclusive"),
        lm_site("vision.tok_embeddings_proj", verdict="confirmed"),  # no dotted-suffix match for anyone
    ]
    merge.merge(report, results_for(*sites), str(tmp_path))
    by_line = {f.line: f.runtime for f in report.findings if f.code == "DTP103"}
    assert by_line[lines["tok_embeddings"]]["verdict"] == "refuted"
    # worst of the two MoE layers' sites
    assert by_line[lines["routed_experts"]]["verdict"] == "confirmed"
    assert {s["module"] for s in by_line[lines["routed_experts"]]["evidence"]["sites"]} == {
        "layers.1.moe.routed_experts", "layers.2.moe.routed_experts"}
    assert by_line[lines["inner"]]["verdict"] == "inconclusive"
    assert by_line[lines["unnamed"]]["verdict"] == "not-reached"  # no assignment names a module
    # the unmatched confirmed local_map site is reported on its own (DTP903), the matched ones are not
    extra = [(f.code, f.path) for f in report.findings if f.code >= "DTP900"]
    assert extra == [("DTP903", "/site/pkg/protocols/module.py")]



def test_dtp103_config_named_by_several_findings_is_inconclusive(tmp_path, monkeypatch):
    """Two models' sharding files both configure `tok_embeddings`: the run shows the module's
    local_map ran, not which file's config was in effect. Neither gets the site's verdict, and
    the confirmed site is still reported on its own."""
    for model in ("model_a", "model_b"):
        (tmp_path / model).mkdir()
        (tmp_path / model / "sharding.py").write_text(CONFIG_SRC)
    line = case_lines(CONFIG_SRC)["tok_embeddings"]
    monkeypatch.chdir(tmp_path)
    report = Report(findings=[finding("model_a/sharding.py", line, "DTP103", column=19),
                              finding("model_b/sharding.py", line, "DTP103", column=19)], errors=[])
    merge.merge(report, results_for(lm_site("tok_embeddings", verdict="confirmed")), str(tmp_path))
    rt = {f.path: f.runtime for f in report.findings}
    assert rt["model_a/sharding.py"]["verdict"] == "inconclusive"
    assert rt["model_b/sharding.py"]["verdict"] == "inconclusive"
    ev = rt["model_a/sharding.py"]["evidence"]
    assert ev["other_findings"] == [f"model_b/sharding.py:{line}"] and ev["site_verdict"] == "confirmed"
    assert "matched by module path `tok_embeddings` only" in reporters.short_evidence(ev)
    assert [(f.code, f.line) for f in report.findings if f.code >= "DTP900"] == [("DTP903", 290)]

def test_dtp103_local_map_call_still_matches_by_function_name(tmp_path):
    src = tmp_path / "lm.py"
    src.write_text(textwrap.dedent('''\
        from torch.distributed.tensor.experimental import local_map


        def build(mesh, fn, other):
            a = local_map(fn, out_placements=[Partial()], in_placements=([Replicate()],), device_mesh=mesh)
            b = local_map(lambda x: x, out_placements=[Partial()], in_placements=([Replicate()],))
            return a, b
    '''))
    f_named = finding(src, 5, "DTP103", column=9)
    f_lambda = finding(src, 6, "DTP103", column=9)
    sites = [
        # a module named `fn` must not make the call form match by module
        site("/t/_func_map.py", 1, module="fn", local_map="/x/other.py:3:other|arg0", verdict="confirmed"),
        site("/t/_func_map.py", 2, module="m", local_map="/x/user.py:9:fn|arg0", verdict="refuted"),
        site("/t/_func_map.py", 3, module="m", local_map=f"{src}:6:<lambda>|arg0", verdict="inconclusive"),
    ]
    assert [s["line"] for s in merge.match_sites(f_named, merge._all_sites(results_for(*sites)), str(tmp_path))] == [2]
    assert [s["line"] for s in merge.match_sites(f_lambda, merge._all_sites(results_for(*sites)), str(tmp_path))] == [3]


@pytest.mark.parametrize("target, key", [
    ("config.tok_embeddings.sharding_config", "tok_embeddings"),
    ("model.tok_embeddings._sharding_config", "tok_embeddings"),
    ("self.cfg.layers[1].moe.routed_experts.sharding_config", "layers.1.moe.routed_experts"),
    ("config.layers[i].attention.inner_attention.local_map", "layers.*.attention.inner_attention"),
    ("inner_attention_cfg.sharding_config", "inner_attention"),
    ("config.sharding_config", None),
    ("sharding_config", None),
    ("model_config.sharding_config", None),
    ("embed_config", "embed"),
    ("get_config().norm.sharding_config", None),
])
def test_module_key_of_assignment_target(target, key):
    assert merge.module_key_of_target(ast.parse(target, mode="eval").body) == key


def test_local_map_form_dict_key():
    tree = ast.parse('plans = {\n    "layers.*.moe": LocalMapConfig(in_grad_placements=None),\n}\n')
    assert merge.local_map_form(tree, 2, 21) == ("config", "layers.*.moe")
    assert merge.local_map_form(ast.parse("f = partial(local_map, experts_fn, None)\n"), 1, 5) == (
        "function", "experts_fn")


# --- runtime summary ----------------------------------------------------------------------------
def test_runtime_summary_counts_and_text_line(tmp_path):
    analysed = package(tmp_path / "a")
    reached, missed = finding(analysed), finding(analysed, 2)
    report = Report(findings=[reached, missed], errors=[])
    results = [
        {"harness": "h1", "sites": [site(analysed, verdict="refuted"), site(analysed, 3, verdict="refuted")],
         "params": [{"name": "w", "status": "agree"}, {"name": "b", "status": "agree"}]},
        {"harness": "h2", "sites": [site(analysed, 4, verdict="refuted")], "params": [{"name": "w", "status": "agree"}]},
    ]
    merge.merge(report, results, str(tmp_path))
    rs = merge.runtime_summary(report, results)
    assert rs == {"harnesses": 2, "sites_reached": 3, "parameters_checked": 3, "static_findings": 2,
                  "static_findings_reached": 1, "runtime_findings": 0, "not_imported_files": [],
                  "plan_entries_not_run": []}
    text = reporters.render(report, "text", runtime_summary=rs).splitlines()
    assert text[-2:] == ["runtime: 2 harnesses, 3 sites reached, 3 parameters checked, 1/2 static findings reached",
                         "Found 2 findings (0 high, 0 medium, 2 low)."]
    assert reporters.runtime_line(dict(rs, harnesses=1, sites_reached=1, parameters_checked=1, static_findings=1)) == (
        "runtime: 1 harness, 1 site reached, 1 parameter checked, 1/1 static finding reached")
    # without a summary (check, not confirm) the formats are unchanged
    assert "runtime: 2 harnesses" not in reporters.render(report, "text")
    assert "runtime_summary" not in json.loads(reporters.render(report, "json"))


def test_runtime_summary_in_json_and_sarif(tmp_path):
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads((Path(__file__).parents[1] / "json_output_schema.json").read_text())
    rs = {"harnesses": 1, "sites_reached": 0, "parameters_checked": 4, "static_findings": 0,
          "static_findings_reached": 0, "runtime_findings": 0}
    empty = Report(findings=[], errors=[])
    data = json.loads(reporters.render(empty, "json", runtime_summary=rs))
    assert data["runtime_summary"] == rs
    jsonschema.validate(data, schema)
    jsonschema.validate(json.loads(reporters.render(empty, "json")), schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(dict(data, runtime_summary=dict(rs, sites=1)), schema)
    sarif = json.loads(reporters.render(empty, "sarif", runtime_summary=rs))
    assert sarif["runs"][0]["properties"] == {"runtimeSummary": rs}
    assert "properties" not in json.loads(reporters.render(empty, "sarif"))["runs"][0]
    assert reporters.render(empty, "text", runtime_summary=rs) == (
        "runtime: 1 harness, 0 sites reached, 4 parameters checked, 0/0 static findings reached\n"
        "All checks passed!\n")


def test_warns_when_the_monitor_saw_no_site(capsys, monkeypatch):
    monkeypatch.delenv("PLACEMENT_LINT_QUIET", raising=False)
    rs = {"harnesses": 2, "sites_reached": 0, "parameters_checked": 5, "static_findings": 0,
          "static_findings_reached": 0, "runtime_findings": 0}
    runtime_cli._warn_if_nothing_seen(rs)
    err = capsys.readouterr().err
    assert "warning: the monitor saw no DTensor conversion in 2 harness(es)" in err
    runtime_cli._warn_if_nothing_seen(dict(rs, sites_reached=1))
    assert capsys.readouterr().err == ""



def test_unflagged_site_in_an_identical_copy_is_reported_in_the_analysed_copy(tmp_path):
    """A DTP903 at a line the static pass did not flag lands in the file the user analysed (the
    one a review bot annotates), not in the installed copy the ranks ran."""
    analysed = package(tmp_path / "checkout" / "src")
    installed = package(tmp_path / "venv" / "site-packages")
    report = Report(findings=[finding(analysed)], errors=[])
    merge.merge(report, results_for(site(installed), site(installed, line=LINE + 1)), str(tmp_path))
    assert ("DTP903", str(analysed.relative_to(tmp_path)), LINE + 1, "confirmed") in verdicts(report)


def test_warnings_survive_quiet_mode(capsys, monkeypatch):
    """PLACEMENT_LINT_QUIET silences progress lines, never a warning about the result."""
    monkeypatch.setenv("PLACEMENT_LINT_QUIET", "1")
    runtime_cli._progress("check: 1 harness(es)")
    runtime_cli._warn_if_nothing_seen({"harnesses": 1, "sites_reached": 0, "parameters_checked": 0,
                                       "static_findings": 0, "static_findings_reached": 0, "runtime_findings": 0})
    assert capsys.readouterr().err == ("placement-lint: warning: the monitor saw no DTensor conversion in 1 "
                                       "harness(es) (no to_local/from_local/full_tensor/local_map call): did the "
                                       "model create any DTensor? The runtime check had nothing to judge\n")


def test_config_findings_in_files_the_run_never_imported_do_not_claim_the_module(tmp_path):
    """Two models configure `tok_embeddings`; the ranks imported only one of the two files: that
    one gets the verdict, the other is not-reached (not an ambiguous `inconclusive`)."""
    cfg = ("def setup(config, LocalMapConfig):\n"
           "    config.tok_embeddings.sharding_config = LocalMapConfig(in_grad_placements=None)\n")
    used, other = tmp_path / "used_model.py", tmp_path / "other_model.py"
    used.write_text(cfg)
    other.write_text(cfg)
    lm = site(tmp_path / "generic.py", line=9, api="to_local", verdict="refuted", module="tok_embeddings",
              local_map=f"{tmp_path / 'emb.py'}:3:forward|arg0")
    findings = [finding(used, line=2, code="DTP103", column=47), finding(other, line=2, code="DTP103", column=47)]
    results = results_for(lm)
    report = Report(findings=list(findings), errors=[])
    merge.merge(report, results, str(tmp_path))
    assert [f.runtime["verdict"] for f in report.findings] == ["inconclusive", "inconclusive"]  # no import data
    results[0]["loaded_files"] = [str(used)]
    report = Report(findings=[finding(used, line=2, code="DTP103", column=47),
                              finding(other, line=2, code="DTP103", column=47)], errors=[])
    merge.merge(report, results, str(tmp_path))
    assert {Path(f.path).name: f.runtime["verdict"] for f in report.findings} == {
        "used_model.py": "refuted", "other_model.py": "not-reached"}


# --- plan entries, sites reached elsewhere, what never ran ---------------------------------------
PLAN = textwrap.dedent("""\
    def parallelize(model, mesh):
        plan = {
            "moe": PrepareModuleInputOutput(use_local_input=True),
            "router.gate": NoParallel(),
        }
        parallelize_module(model, mesh, plan)
""")


def test_style_site_at_the_harness_line_is_matched_to_its_plan_entry_and_related(tmp_path):
    """A torch style's hook runs torch code, so its site is the harness line that called the
    module; with the module's fully qualified name it matches the plan entry's DTP102, and the
    harness line becomes a related location. The other entry's module never ran: the finding
    says so, and the summary names the entry."""
    plan = package(tmp_path, PLAN, name="parallelize")
    harness = tmp_path / "harness.py"
    harness.write_text("def harness(ctx):\n    return model.layers['0'].moe(x)\n")
    moe, gate = finding(plan, 3, "DTP102", column=9), finding(plan, 4, "DTP102", column=9)
    report = Report(findings=[moe, gate], errors=[])
    results = [{"harness": f"{harness}:harness", "loaded_files": [str(plan)], "params": [],
                "sites": [dict(site(harness, 2, module="layers.0.moe", hook="pre"), torch_frame="style.py:1 f")]}]
    merge.merge(report, results, str(tmp_path))
    assert moe.runtime["verdict"] == "confirmed"
    assert [(r.path, r.line) for r in moe.related] == [("harness.py", 2)]
    assert "pre hook of `layers.0.moe`" in moe.related[0].message
    assert not [f for f in report.findings if f.code >= "DTP900"]  # no runtime-only duplicate
    assert gate.runtime["verdict"] == "not-reached"
    assert gate.runtime["evidence"]["file_imported"] is True and gate.runtime["evidence"]["plan_keys"] == ["router.gate"]
    assert "`router.gate`" in gate.runtime["evidence"]["reason"]
    rs = merge.runtime_summary(report, results)
    assert rs["plan_entries_not_run"] == ["router.gate"] and rs["not_imported_files"] == []


def test_not_reached_in_a_file_never_imported_is_named_and_no_path_warning_when_paths_agree(tmp_path, capsys):
    used = package(tmp_path / "a")
    other = tmp_path / "a" / "pkg" / "nn" / "other.py"
    other.write_text(MODEL)
    f_used, f_other = finding(used, 2), finding(other)
    report = Report(findings=[f_used, f_other], errors=[])
    results = [{"harness": "h", "loaded_files": [str(used)], "params": [],
                "sites": [site(used, 4, verdict="refuted")]}]
    merge.merge(report, results, str(tmp_path))
    assert f_other.runtime["evidence"]["file_imported"] is False
    assert "never imported" in f_other.runtime["evidence"]["reason"]
    assert f_used.runtime["evidence"]["file_imported"] is True
    rs = merge.runtime_summary(report, results)
    assert rs["not_imported_files"] == [f_other.path]
    runtime_cli._warn_if_nothing_matched(report, results)
    runtime_cli._tell_what_never_ran(rs)
    err = capsys.readouterr().err
    assert "PYTHONPATH" not in err  # the ranks imported an analysed file: paths agree
    assert "files the ranks never imported: " + f_other.path in err
    # the ranks imported none of the analysed files: then the paths may really differ
    results[0]["loaded_files"] = []
    runtime_cli._warn_if_nothing_matched(report, results)
    assert "PYTHONPATH" in capsys.readouterr().err


def test_a_localized_wrong_gradient_with_no_bad_site_inside_is_reported_at_the_module(tmp_path):
    """--reference: a gradient wrong identically on every rank (no site looked bad) is reported
    where it first goes wrong, the module's forward, with the conversions inside it related; the
    parameter's DTP904 names the module. Where a bad site inside explains it, no second finding."""
    mod = package(tmp_path)
    loc = {"module": "layers.0.moe", "summary": "the gradient goes wrong inside `layers.0.moe`: its output gradient "
           "matches the one-rank reference, but input 0 gradient = reference + 1x the `layers.0.moe.router` path",
           "location": {"path": str(mod), "line": 4},
           "sites": [{"api": "from_local", "path": str(mod), "line": 5, "module": "layers.0.moe.router", "hook": "pre",
                      "verdict": "refuted", "declared": None}], "wrong_params": []}
    res = {"harness": "h", "sites": [], "localization": [loc],
           "params": [{"name": "embed.weight", "status": "agree", "matches_reference": False,
                       "reference_rel_diff": {"0": 0.3}, "location": {"path": str(mod), "line": 2}}]}
    report = merge.merge(Report(findings=[], errors=[]), [res], str(tmp_path), reference=True)
    at = {(f.code, f.line): f for f in report.findings}
    module = at[("DTP904", 4)]
    assert "inside `layers.0.moe`" in module.message and "`from_local` at pkg/nn/modeling.py:5" in module.message
    assert [(r.path, r.line) for r in module.related] == [("pkg/nn/modeling.py", 5)]
    assert "reference + 1x the `layers.0.moe.router` path" in at[("DTP904", 2)].message
    # a confirmed site inside: it is the cause, reported there; no module finding
    loc["sites"][0]["verdict"] = "confirmed"
    report = merge.merge(Report(findings=[], errors=[]), [res], str(tmp_path), reference=True)
    assert [(f.code, f.line) for f in report.findings if f.code == "DTP904"] == [("DTP904", 2)]
