from __future__ import annotations

from placement_lint.findings import Confidence
from placement_lint.rule import Example, FileContext, Rule


class LocalMapWithoutGradPlacements(Rule):
    """
    What it does
        Flags `local_map(...)` (and `LocalMapConfig(...)`, `partial(local_map, ...)`) calls whose
        `in_grad_placements` is missing, `None`, or `None` on some branch, while an input
        placement is Replicate.

    Why it breaks the gradient
        `local_map` runs the wrapped function on local tensors. In backward, the gradient of each
        input is labelled with `in_grad_placements`, and when that is `None`, with the forward
        input placements. A Replicate input that meets a sharded input inside the function
        receives a different gradient on each rank; labelled Replicate, it is never all-reduced.

    Example
        f = local_map(
            matmul, out_placements=[Partial()], in_placements=([Replicate()], [Shard(1)]),
            in_grad_placements=None, device_mesh=mesh,
        )

    Use instead
        f = local_map(
            matmul, out_placements=[Partial()], in_placements=([Replicate()], [Shard(1)]),
            in_grad_placements=([Partial()], [Shard(1)]), device_mesh=mesh,
        )

    Fix safety
        No automatic fix: the right grad placement depends on what the function does per input.

    Confidence
        high: a Replicate input next to a Shard input (the replicated input meets sharded data
        inside the function). medium: a Replicate input. low: input placements unknown.
        The finding starts at the `in_grad_placements=` argument when one is given (`... if c
        else None`), at the call otherwise; its range ends with the call.
    """

    CODE = "DTP103"
    SLUG = "local-map-without-grad-placements"
    SUMMARY = "local_map() whose in_grad_placements is missing or None on some branch, with a Replicate input"

    INVALID = [
        Example(
            """
            from torch.distributed.tensor import Partial, Replicate, Shard
            from torch.distributed.tensor.experimental import local_map

            def build(mesh, fn, reduce):
                grads = ([Partial()], [Shard(1)]) if reduce else None
                return local_map(fn, out_placements=[Partial()], in_placements=([Replicate()], [Shard(1)]), in_grad_placements=grads, device_mesh=mesh)  # expect: DTP103 high
            """,
            "None on one branch, Replicate input next to a Shard input",
        ),
        Example(
            """
            from torch.distributed.tensor import Replicate
            from torch.distributed.tensor.experimental import local_map

            @local_map(out_placements=[Replicate()], in_placements=([Replicate()],))  # expect: DTP103 medium
            def scale(x):
                return x * 2
            """,
            "decorator form, in_grad_placements absent",
        ),
        Example(
            """
            from torchtitan.protocols.module import LocalMapConfig

            def embedding_config(config):
                config.tok_embeddings.sharding_config = LocalMapConfig(in_grad_placements=None)  # expect: DTP103 low
            """,
            "torchtitan's LocalMapConfig: the same in_grad_placements contract as local_map",
        ),
    ]
    VALID = [
        Example(
            """
            from torch.distributed.tensor import Partial, Replicate, Shard
            from torch.distributed.tensor.experimental import local_map

            def build(mesh, fn):
                return local_map(fn, [Partial()], ([Replicate()], [Shard(1)]), ([Partial()], [Shard(1)]), mesh)
            """,
            "grad placements given (positionally)",
        ),
        Example(
            """
            from torch.distributed.tensor import Shard
            from torch.distributed.tensor.experimental import local_map

            f = local_map(lambda x: x * 2, out_placements=[Shard(0)], in_placements=([Shard(0)],))
            """,
            "all inputs sharded: the forward placements are the right gradient labels",
        ),
        Example(
            """
            import spmd_types as spmd

            @spmd.local_map(in_types=({"tp": spmd.R},), out_types=({"tp": spmd.P},))
            def proj(x):
                return x * 2
            """,
            "another library's local_map (spmd_types), whose types fix the backward",
        ),
        Example(
            """
            from torchaudio_like.configs import LocalMapConfig

            cfg = LocalMapConfig(in_grad_placements=None)
            """,
            "a LocalMapConfig from a library that is not torch or torchtitan (not `torch` by prefix)",
        ),
    ]

    def check(self, ctx: FileContext):
        for site in ctx.sites("local_map"):
            if site["grad"] == "set":
                continue
            pl = site.get("in_placements")
            if pl is None or "?" in pl:
                confidence = Confidence.LOW if pl is None or "R" not in pl else Confidence.MEDIUM
            elif "R" not in pl and "P" not in pl:
                continue  # all-Shard inputs: the forward placements are the right labels
            else:
                confidence = Confidence.HIGH if "S" in pl else Confidence.MEDIUM
            state = {
                "absent": "is not given",
                "none": "is None",
                "none on some branch": "is None on some branch",
            }[site["grad"]]
            mix = " next to a Shard input" if pl and "S" in pl else ""
            message = (
                f"`local_map` in_grad_placements {state} while an input is Replicate{mix}: the replicated input's "
                "gradient is labelled Replicate, so if ranks compute different gradients for it inside the function "
                "the all-reduce is skipped. Pass in_grad_placements on every branch, with `[Partial()]` for replicated "
                "inputs that meet sharded data"
            )
            yield self.finding(ctx, site, message, confidence, at=(site.get("at") or {}).get("in_grad_placements"))
