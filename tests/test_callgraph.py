"""Following a local tensor into the project's functions (placement_lint.callgraph): the cases a
rule example does not spell out."""

from __future__ import annotations

import textwrap

EXIT = textwrap.dedent(
    """
    from torch import nn
    from torch.distributed.tensor import DTensor, Replicate, Shard, distribute_tensor
    {imports}

    class Layer(nn.Module{base}):
        def __init__(self, mesh, w):
            super().__init__()
            self.mesh = mesh
            self.w = nn.Parameter(distribute_tensor(w, mesh, [Shard(0)]))

        def forward(self, h, ids):
            x = DTensor.from_local(h, self.mesh, [Replicate()]).to_local()
            return {call}
    """
)


def finding(report, path="layer.py"):
    found = [(f.code, str(f.confidence), f.message) for f in report.findings if f.path == path and f.code == "DTP101"]
    assert len(found) == 1, report.findings
    return found[0]


def test_keyword_arguments_reach_their_parameters(lint_files):
    # the Shard DTensor goes in by keyword too: the callee's use of its local shard is the evidence
    helper = "def run(*, w, tokens):\n    return tokens @ w.to_local().t()\n"
    report = lint_files({
        "helper.py": helper,
        "layer.py": EXIT.format(imports="from helper import run", base="", call="run(w=self.w, tokens=x)"),
    })
    code, conf, msg = finding(report)
    assert conf == "high" and "`run()`" in msg and "passed as `w`" in msg


def test_argument_into_star_args_is_not_guessed(lint_files):
    helper = "def run(*xs):\n    return xs[0] @ xs[1].to_local().t()\n"
    report = lint_files({
        "helper.py": helper,
        "layer.py": EXIT.format(imports="from helper import run", base="", call="run(x, self.w)"),
    })
    code, conf, msg = finding(report)
    assert conf == "medium" and "passed to run()" in msg  # not followed: its consumers stay unseen


def test_method_inherited_from_a_base_class_in_a_file_without_tokens(lint_files):
    # the base's module mentions no trigger token: the prefilter skips it, the index asks for it
    base = textwrap.dedent(
        """
        class ExpertMixin:
            def _experts(self, x, ids):
                out = x * 0
                for i, expert in enumerate(self.local_experts):
                    out = out + (ids == i) * expert(x)
                return out
        """
    )
    report = lint_files({
        "base.py": base,
        "layer.py": EXIT.format(imports="from base import ExpertMixin", base=", ExpertMixin", call="self._experts(x, ids)"),
    })
    code, conf, msg = finding(report)
    assert conf == "high" and "ExpertMixin._experts()" in msg and "per-rank expert" in msg


def test_mutual_recursion_without_evidence_ends_and_stays_unproven(lint_files):
    helper = textwrap.dedent(
        """
        def ping(x, n):
            return x if n == 0 else pong(x * 2, n - 1)

        def pong(x, n):
            return ping(x + 1, n)
        """
    )
    report = lint_files({
        "helper.py": helper,
        "layer.py": EXIT.format(imports="from helper import ping", base="", call="ping(x, 3) @ self.w.to_local().t()"),
    })
    # the matmul with the local shard in forward is the evidence; the recursion adds none and ends
    code, conf, msg = finding(report)
    assert conf == "high" and "local shard" in msg


def test_replicated_consumers_followed_to_the_end_are_low(lint_files):
    helper = textwrap.dedent(
        """
        import torch.nn.functional as F

        def norm(x):
            return F.layer_norm(x, x.shape[-1:])

        def project(x):
            return F.gelu(norm(x))
        """
    )
    call = "DTensor.from_local(project(x), self.mesh, [Replicate()])"  # re-wrapped: nothing escapes
    report = lint_files({
        "helper.py": helper,
        "layer.py": EXIT.format(imports="from helper import project", base="", call=call),
    })
    code, conf, msg = finding(report)
    assert conf == "low" and "nothing rank-dependent" in msg
