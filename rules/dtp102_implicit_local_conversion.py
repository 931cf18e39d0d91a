from __future__ import annotations

from placement_lint.findings import Confidence, Related
from placement_lint.rule import Example, FileContext, Rule

_NAMES = {"R": "Replicate", "P": "Partial", "S": "Shard", "?": "an unknown layout"}
#: plan keys of modules that hold no parameters (rotary / positional embeddings)
_PARAMETER_FREE = ("rotary", "rope", "pos_emb", "inv_freq", "position_emb")


def _parameter_free(site: dict) -> bool:
    key = (site.get("plan_key") or "").lower()
    return any(p in key for p in _PARAMETER_FREE)


class ImplicitLocalConversion(Rule):
    """
    What it does
        Flags ParallelStyles that convert DTensors to local tensors without grad placements:
        torch styles with `use_local_output=True` / `use_local_input=True` whose layout is or may
        be Replicate/Partial (reported at that argument), and every place where a project
        ParallelStyle whose hook calls `to_local()` bare is applied (for example
        `{"moe.router.gate": NoParallel()}`), reported at the plan entry with a related location
        pointing at the hook. The style is found as Python would import it: through package
        `__init__` re-exports, relative imports, `import pkg.sub as d`, src/ layouts and packages
        named `torch*` (torchtitan, torchtune); through subclasses defined in other modules; and
        through instances built by a helper function or kept in a variable or dict, and classes
        picked from a registry dict (`STYLES[kind]()`), before they reach the plan.

    Why it breaks the gradient
        A style's forward hook that returns `outputs.to_local()` is the same bug as a bare
        `to_local()`, one level removed from the code that looks at it: the gradient coming back
        into the hook is labelled Replicate. If the module's output then meets rank-dependent
        work (sharded experts, a rank slice of tokens), each rank's gradient is partial, no
        all-reduce runs, and the module's replicated weights (an MoE router gate) drift apart.

    Example
        parallelize_module(model, mesh, {"moe.router.gate": NoParallel()})
        # where NoParallel._prepare_output_fn returns outputs.to_local()

    Use instead
        In the hook: `outputs.to_local(grad_placements=(Partial(),))` when the consumers are
        rank-dependent, or keep the output a DTensor (`use_local_output=False`).

    Fix safety
        Unsafe, and only where the style's constructor has an option for it: a parameter named
        like `*grad_placements*` gets `(Partial(),)`, else `use_local_output=False` keeps the
        output a DTensor. Otherwise the change belongs in the style's hook. Partial is only right
        when the consumers really are rank-dependent (`placement-lint confirm` tells).

    Confidence
        medium: an explicit `use_local_output=True` with a Replicate/Partial (or unknown) layout,
        or a project style whose hook leaves DTensor bare. low: the flag is on only by default
        (e.g. `RowwiseParallel()`, whose Replicate output is usually consumed by replicated code),
        also for a project subclass of a torch style applied without `use_local_output=True`. A
        subclass's input hook converting an input that arrives Shard by its base's default
        (`RowwiseParallel`) is not a leak: Shard is the right label.
    """

    CODE = "DTP102"
    SLUG = "implicit-local-conversion"
    FIX = "unsafe"  # only where the style's constructor has an option for it
    SUMMARY = "a ParallelStyle converts to local tensors without grad placements (use_local_output, bare to_local in a hook)"

    INVALID = [
        Example(
            """
            from torch.distributed.tensor import Replicate
            from torch.distributed.tensor.parallel import PrepareModuleOutput, parallelize_module

            def apply(model, mesh):
                plan = {
                    "router": PrepareModuleOutput(output_layouts=Replicate(), desired_output_layouts=Replicate(), use_local_output=True),  # expect: DTP102 medium
                }
                parallelize_module(model, mesh, plan)
            """,
            "explicit use_local_output=True with a Replicate layout",
        ),
        Example(
            {
                "pkg/__init__.py": "",
                "pkg/styles.py": """
                    from torch.distributed.tensor import DTensor, Replicate
                    from torch.distributed.tensor.parallel import ParallelStyle

                    class NoParallel(ParallelStyle):
                        @staticmethod
                        def _prepare_output_fn(use_local_output, mod, outputs, device_mesh):
                            return outputs.to_local() if use_local_output else outputs
                    """,
                "pkg/model.py": """
                    from torch.distributed.tensor.parallel import parallelize_module
                    from .styles import NoParallel

                    def apply(model, mesh):
                        parallelize_module(model, mesh, {"moe.router.gate": NoParallel()})  # expect: DTP102 medium
                    """,
            },
            "a project style (defined in another file) whose hook calls to_local() bare",
        ),
        Example(
            {
                "torchfoo/__init__.py": "",
                "torchfoo/distributed/__init__.py": "from .styles import NoParallel\n\n__all__ = [\"NoParallel\"]\n",
                "torchfoo/distributed/styles.py": """
                    from torch.distributed.tensor.parallel import ParallelStyle

                    class NoParallel(ParallelStyle):
                        @staticmethod
                        def _prepare_output_fn(mod, outputs, device_mesh):
                            return outputs.to_local()
                    """,
                "torchfoo/models/__init__.py": "",
                "torchfoo/models/parallelize.py": """
                    from torch.distributed.tensor.parallel import parallelize_module
                    import torchfoo.distributed as tdist

                    STYLES = {"replicated": tdist.NoParallel()}
                    STYLE_CLASSES = {"replicated": tdist.NoParallel}

                    def router_style():
                        return tdist.NoParallel()

                    def apply(model, mesh, kind="replicated"):
                        style = tdist.NoParallel()
                        plan = {"moe.router.gate": router_style()}  # expect: DTP102 medium
                        plan["moe.shared_gate"] = style  # expect: DTP102 medium
                        plan["moe.expert_bias"] = STYLES["replicated"]  # expect: DTP102 medium
                        plan["moe.score_gate"] = STYLE_CLASSES[kind]()  # expect: DTP102 medium
                        parallelize_module(model, mesh, plan)
                    """,
            },
            "a package named torch*: re-exported through __init__, reached by `import ... as`, built by a "
            "helper, stored in a variable or a dict, or picked from a registry of classes, before it lands at "
            "a plan entry",
        ),
    ]
    VALID = [
        Example(
            """
            from torch.distributed.tensor.parallel import ColwiseParallel, RowwiseParallel, SequenceParallel

            plan = {
                "wq": ColwiseParallel(use_local_output=True),
                "norm": SequenceParallel(use_local_output=True),
                "wo": RowwiseParallel(use_local_output=False),
            }
            """,
            "Shard layouts, or the output stays a DTensor",
        ),
        Example(
            {
                "styles.py": """
                    from torch.distributed.tensor import Partial
                    from torch.distributed.tensor.parallel import ParallelStyle

                    class NoParallel(ParallelStyle):
                        @staticmethod
                        def _prepare_output_fn(mod, outputs, device_mesh):
                            return outputs.to_local(grad_placements=(Partial(),))
                    """,
                "model.py": """
                    from styles import NoParallel

                    plan = {"moe.router.gate": NoParallel()}
                    """,
            },
            "the style's hook declares grad placements",
        ),
        Example(
            """
            from torch.distributed.tensor.parallel import RowwiseParallel

            class VocabParallelEmbedding(RowwiseParallel):
                @staticmethod
                def _prepare_input_fn(input_layouts, desired_layouts, mod, inputs, mesh):
                    mod._saved_ids = inputs[0].to_local().clone()
                    return RowwiseParallel._prepare_input_fn(input_layouts, desired_layouts, mod, inputs, mesh)

            plan = {"tok_embeddings": VocabParallelEmbedding()}
            """,
            "a side copy kept on the module is not what the hook hands on",
        ),
        Example(
            """
            from torch.distributed.tensor import DTensor
            from torch.distributed.tensor.parallel import RowwiseParallel

            class KernelRowwise(RowwiseParallel):
                @staticmethod
                def _prepare_input_fn(input_layouts, desired_input_layouts, mod, inputs, device_mesh):
                    x = inputs[0]
                    return x.to_local() if isinstance(x, DTensor) else x

                @staticmethod
                def _prepare_output_fn(output_layouts, use_local_output, mod, outputs, device_mesh):
                    return outputs.to_local() if use_local_output else outputs

            plan = {"out_proj": KernelRowwise()}
            """,
            "a RowwiseParallel subclass: its input arrives Shard (Shard is the right label), and its "
            "output converts as RowwiseParallel's does, on only by default (low, as for the torch style)",
        ),
    ]

    def check(self, ctx: FileContext):
        for site in ctx.sites("style"):
            found = self.torch_style(ctx, site)
            if found is not None:
                yield found
        for site in ctx.sites("style_candidate"):
            found = self.project_style(ctx, site)
            if found is not None:
                yield found
        # a leaky project style that is never applied in the files analysed: report at its hook
        for c in ctx.facts.get("classes", ()):
            fqn = ctx.index.class_fqn(ctx.path, c["qualname"])
            if ctx.index.is_style(fqn) and ctx.index.style_uses.get(fqn, 0) == 0:
                leak = ctx.index.leak(fqn)
                if leak is not None and leak[0] == ctx.path:
                    site = leak[1]
                    yield self.finding(
                        ctx, site,
                        f"ParallelStyle `{c['name']}` leaves DTensor with a bare `.{site['api']}()` in its hook; no place "
                        "where it is applied was found among the files analysed. Every module it is applied to gets its "
                        "gradient labelled Replicate: pass `grad_placements=(Partial(),)` if that module's output meets "
                        "rank-dependent work",
                        Confidence.LOW,  # a hazard note: whether it bites depends on where it is applied
                    )

    def torch_style(self, ctx: FileContext, site: dict):
        worst = None
        for flag, info in site["flags"].items():
            if not info["value"]:
                continue
            layout = set(info["layout"])
            if layout == {"S"}:
                continue
            # on only by default (RowwiseParallel()): usually feeds replicated code, so low;
            # rotary/positional modules have no parameters for a gradient to reach
            conf = Confidence.LOW if info["how"] == "default" or _parameter_free(site) else Confidence.MEDIUM
            if worst is None or conf > worst[0]:
                worst = (conf, flag, info)
        if worst is None:
            return None
        conf, flag, info = worst
        layout = "/".join(_NAMES.get(p, p) for p in info["layout"])
        where = f" for `{site['plan_key']}`" if site.get("plan_key") else ""
        side = "input" if flag == "use_local_input" else "output"
        message = (
            f"`{site['style']}({flag}=True)`{where} hands the {side} to plain torch code with layout {layout} and no grad "
            f"placements: its gradient is labelled {layout}, so if ranks compute different gradients downstream the "
            f"reduction is skipped. Keep the {side} a DTensor (`{flag}=False`) or convert it with "
            "`to_local(grad_placements=(Partial(),))` where consumers are rank-dependent"
        )
        # about a flag passed explicitly: the finding starts at that argument
        return self.finding(ctx, site, message, conf, at=(site.get("at") or {}).get(flag))

    def project_style(self, ctx: FileContext, site: dict):
        index = ctx.index
        if site.get("applied_elsewhere"):
            return None  # the instance is applied at a plan entry: reported there
        fqn = index.resolve_style(site, ctx.path)
        if fqn is None or not index.is_style(fqn):
            return None
        if any(v is False for v in site.get("flags", {}).values()):
            return None  # applied with use_local_output=False: the output stays a DTensor
        leak = index.leak(fqn)
        if leak is None:
            return None
        hook_path, hook_site = leak
        where = f" to `{site['plan_key']}`" if site.get("plan_key") else ""
        style = fqn.rsplit(".", 1)[-1]
        how = f" (built by `{site['name']}()`)" if site.get("via_call") and site["name"] != style else ""
        line = hook_site["pos"][0] if hook_site.get("pos") else 0  # positioned in the engine's last pass
        message = (
            f"ParallelStyle `{style}`{how} applied{where} leaves DTensor in its hook "
            f"(`{hook_site.get('symbol', '')}`, {hook_site['api']}() at {hook_path}:{line}) without grad placements: the "
            "module's output gradient is labelled Replicate, so if tokens then meet rank-dependent work (sharded "
            "experts, a rank slice) each rank keeps a partial gradient and its replicated weights drift apart. Use "
            "`to_local(grad_placements=(Partial(),))` in the hook"
        )
        related = [Related(hook_path, line, f"bare {hook_site['api']}() in {hook_site.get('symbol', 'the hook')}")]
        confidence = Confidence.LOW if _parameter_free(site) else Confidence.MEDIUM
        base = index.torch_base(fqn)
        if base is not None and site.get("flags", {}).get("use_local_output") is not True:
            # a subclass of a torch style converting as its base does, the flag on only by
            # default: the same policy as for the torch style itself (`RowwiseParallel()`)
            confidence = Confidence.LOW
        return self.finding(ctx, site, message, confidence, related=related, fix=self.option_fix(index, fqn, site))

    @staticmethod
    def option_fix(index, fqn: str, site: dict) -> dict | None:
        """Where the style's constructor has an option for it, pass it at the plan entry: a
        `*grad_placements*` parameter gets `(Partial(),)`; else `use_local_output=False` keeps the
        output a DTensor. Unsafe, as every placement fix the static pass cannot prove."""
        if not site.get("pos") or site.get("flags"):
            return None  # unpositioned (first pass), or the option is already written
        path, cls = index.classes[fqn][0], index.classes[fqn][1]["qualname"]
        init = index.method(path, cls, "__init__")
        params = [p for p in (init[2].get("params") if init else []) if p != "self"]
        grad = next((p for p in params if "grad_placement" in p), None)
        if grad is not None:
            text, imports = f"{grad}=(Partial(),)", [["torch.distributed.tensor", "Partial"]]
        elif "use_local_output" in params:
            text, imports = "use_local_output=False", []
        else:
            return None
        _, _, end_line, end_col = site["pos"]
        return {
            "applicability": "unsafe",
            "message": f"Pass `{text}` to `{fqn.rsplit('.', 1)[-1]}`",
            # the engine turns this into an edit before the closing parenthesis (with a comma
            # when the call has arguments), reading the file: facts keep no argument count here
            "add_keyword": {"line": end_line, "column": end_col - 1, "text": text},
            "imports": imports,
        }
