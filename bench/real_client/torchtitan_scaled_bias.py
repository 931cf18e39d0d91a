"""Harness: torchtitan 0.3.0's `ScaledBiasRowwiseLinear`, in the vision MLP where Kimi-K2.5 uses it.

    placement-lint confirm /tmp/corpus/tt/torchtitan --reference \\
        --harness bench/real_client/torchtitan_scaled_bias.py:harness --nproc 2 --backend gloo

The DeepSeek-V3 MoE model does not use `ScaledBiasRowwiseLinear`; torchtitan uses it only in the
vision encoders of kimi_k2_7 and muse_glimmer (`attn.proj`, `mlp.fc2`, `projector.linear_2`).
This harness builds torchtitan's `VisionMLP` (fc1 -> GELU -> fc2) with the configs Kimi-K2.5
builds for it (`_vl_linear`, `_scaled_bias_rowwise_linear`) and the sharding torchtitan sets on
it (`vision_colwise_config` on fc1, `vision_scaled_bias_rowwise_config` on fc2), then
`Module.parallelize` with TP=2 on the DTensor backend, as the MoE harness does.

The bias bug (docs/corpus.md: `models/common/linear.py:69`, DTP101 at low confidence): inside the
rowwise `local_map` region the Replicate bias is taken with a bare `to_local()` and divided by
the TP degree, so the output (declared Partial) gets the full bias once after the reduction. In
backward each rank's bias gradient is 1/tp of the true gradient, *the same on every rank*, and
labelled Replicate, so it is never summed. Ranks agree, so a cross-rank check cannot see it;
the one-rank reference run (`--reference`) can.
"""

from __future__ import annotations

import os
import time

from torchtitan_moe import _flag, _shard_global_init, make_parallel_dims  # noqa: F401 (same folder)

DIM, HIDDEN = 32, 64
BATCH, SEQ = 2, 8


def build_config():
    from torchtitan.models.common.vision_encoder import VisionMLP
    from torchtitan.models.common.vision_encoder_sharding import (
        vision_colwise_config,
        vision_scaled_bias_rowwise_config,
    )
    from torchtitan.models.kimi_k2_7 import _scaled_bias_rowwise_linear, _vl_linear

    cfg = VisionMLP.Config(fc1=_vl_linear(DIM, HIDDEN), fc2=_scaled_bias_rowwise_linear(HIDDEN, DIM))
    # as set_vision_transformer_block_sharding_config does for block.mlp
    cfg.fc1.sharding_config = vision_colwise_config()
    cfg.fc2.sharding_config = vision_scaled_bias_rowwise_config()
    return cfg


def harness(ctx):
    import torch
    from torch.distributed.tensor import DTensor, distribute_tensor

    tp = 1 if ctx.reference else 2
    _, parallel_dims = make_parallel_dims(ctx, tp=tp)
    cfg = build_config()
    ctx.seed()
    with torch.device("meta"):
        model = cfg.build()
    model.parallelize(parallel_dims)
    model.to_empty(device=ctx.device)
    with torch.no_grad():
        model.init_states(buffer_device=None)
        _shard_global_init(ctx, cfg.build, model)
        # torchtitan initialises biases to zero; any values will do for the gradient, but
        # non-zero ones keep the forward honest
        for i, (name, p) in enumerate(model.named_parameters()):
            if name.endswith("bias"):
                full = ctx.randn(tuple(p.shape), offset=100 + i) * 0.1  # p.shape: global shape
                p.copy_(distribute_tensor(full, p.device_mesh, p.placements) if isinstance(p, DTensor) else full)
    model.train()

    x = ctx.randn(BATCH, SEQ, DIM)
    target = ctx.randn(BATCH, SEQ, DIM, offset=1)
    t0 = time.perf_counter()
    with torch.compiler.set_stance("force_eager"):
        out = model(x)
        if isinstance(out, DTensor):
            target = distribute_tensor(target, out.device_mesh, out.placements)
        loss = ((out - target) ** 2).mean()
        loss.backward()
    step_s = time.perf_counter() - t0

    dump = os.environ.get("TT_DUMP")
    if dump:
        from torchtitan_moe import _dump

        _dump(dump, ctx.rank, loss, model, step_s)
    return model
