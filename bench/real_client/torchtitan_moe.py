"""Harness: torchtitan 0.3.0's DeepSeek-V3 MoE model, shrunk, with torchtitan's own TP (and EP).

    placement-lint confirm /tmp/corpus/tt/torchtitan \\
        --harness bench/real_client/torchtitan_moe.py:harness --nproc 2 --backend gloo

Everything model-side is torchtitan's code, unchanged: the config builders of
`torchtitan.models.deepseek_v3` (`build_mla_moe_layers` with DeepSeek-V3's own initialisers),
`set_deepseek_v3_sharding_config` (the sharding plan `update_from_config` installs),
`ParallelDims` (the meshes), `Module.parallelize` (what `parallelize_deepseekv3` calls for TP/EP:
distribute_tensor of the weights, from_local/redistribute at module boundaries, DTensor
`local_map` around the routed experts), `init_weights`, and torchtitan's loss
(`components.loss.cross_entropy_loss`, its loss-parallel path on a vocab-sharded logits DTensor).

What the harness does *not* take from torchtitan, and why:
- `Trainer`: it pulls in datasets/tokenizers/torchdata; the harness does the forward/backward of
  `Trainer.forward_backward_step` itself (one step, no optimizer: the gradients are checked).
- `parallelize_deepseekv3` also applies FSDP (fully_shard on a size-1 dp mesh here, with the
  default bf16 mixed-precision policy), activation checkpointing and compile; the harness calls
  the TP/EP part of it (`model.parallelize(parallel_dims)`) only.
- `spmd_backend="partial_dtensor"`: torchtitan 0.3.0 defaults to `"spmd_types"`, which never
  creates a DTensor (`Module.parallelize` stores each parameter as this rank's plain local shard
  with an spmd_types annotation; tried: the weights come out as plain 128-row tensors), so there
  would be nothing for a DTensor monitor to see. `partial_dtensor` is torchtitan's DTensor path
  for the model-parallel axes (TP, EP).
- Init: torchtitan's `init_weights` runs, then each rank's shard is overwritten with its part of
  one global initialisation by the same initialisers (`_shard_global_init`: on a CPU mesh
  torchtitan's DTensor init gives every rank the same shard).
- Attention kernel on CPU: torchtitan's causal `ScaledDotProductAttention` module instead of
  FlexAttention (no backward on CPU); same local_map region and placements around it.
- `ParallelDims.build_mesh` creates its size-1 mesh dims on torch's "fake" c10d backend, which
  is registered only once torch's FSDP module is imported: the harness imports the model
  package (which imports FSDP, as the Trainer does) before building the meshes.
- `--reference`: the same harness on one rank builds the model with tp=1 (unparallelised).
- CPU: torchtitan reads its device type once at import (`"cuda"` when no accelerator is found);
  the harness points `ParallelDims` at the device the check runs on.
- torch.compile: torchtitan compiles `flex_attention` and `create_block_mask` at import
  (class-level `torch.compile`); the harness runs them eagerly (`force_eager`) in every mode so
  the plain and the monitored runs compute the same thing (confirm forces eager anyway) and so
  2 CPU cores do not spend minutes in inductor.

Knobs (environment, read at call time so one file serves every run):
  TT_EP=1              expert parallelism on the TP ranks (ep=2, tp=2): torchtitan's all-to-all
                       token dispatcher instead of TP-sharded experts
  TT_SP=0              sequence parallelism off (torchtitan's default is on)
  TT_ATTN=flex|sdpa    inner attention kernel: flex (torchtitan's LM default; needs CUDA for its
                       backward) or torchtitan's causal ScaledDotProductAttention; default: flex
                       on CUDA, sdpa on CPU
  TT_INIT=dtensor      keep torchtitan's DTensor init as it runs on CPU (identical TP shards on
                       every rank; see _shard_global_init); default: global (each rank gets its
                       shard of one global initialisation)
  TT_EXPERTS_FP32=1    diagnostic: the routed experts' grouped matmuls accumulate in float32 (via
                       the `_grouped_mm` seam) instead of bf16, to show that --reference's
                       DTP904 on the expert/router gradients is bf16 rounding, not a collective
  TT_DUMP=PATH         write the loss and every parameter gradient's norm (this rank's local
                       shard, float64) to PATH.rank<R>.json: the numerics check compares them
                       between a run with and a run without the monitor
"""

from __future__ import annotations

import json
import os
import time

# model size: torchtitan's "debugmodel" flavour of deepseek_v3 shrunk to run in seconds on CPU
N_LAYERS = 3          # layer 0 dense FFN, layers 1-2 MoE (debugmodel: 6, first dense)
N_DENSE_LAYERS = 1
DIM = 64
N_HEADS = 4
VOCAB = 256
NUM_EXPERTS = 4
TOP_K = 2
MOE_HIDDEN = 32       # bf16 grouped_mm wants 16-byte strides: multiples of 8 (after TP: 16)
DENSE_HIDDEN = 128
BATCH, SEQ = 2, 32


def _flag(name: str, default: str) -> bool:
    return os.environ.get(name, default) not in ("0", "", "false", "no")


def build_config(*, attn: str):
    from torchtitan.models.common import ComplexRoPE, Embedding, Linear, RMSNorm
    from torchtitan.models.common.attention import ScaledDotProductAttention
    import torchtitan.models.deepseek_v3 as ds
    from torchtitan.models.deepseek_v3.model import DeepSeekV3Model
    from torchtitan.models.deepseek_v3.sharding import set_deepseek_v3_sharding_config

    rope_dim = 16
    layers = ds.build_mla_moe_layers(
        n_layers=N_LAYERS, n_dense_layers=N_DENSE_LAYERS, dim=DIM, n_heads=N_HEADS,
        q_lora_rank=0, kv_lora_rank=32, qk_nope_head_dim=16, qk_rope_head_dim=rope_dim,
        v_head_dim=16, mscale=0.70, dense_hidden_dim=DENSE_HIDDEN, moe_hidden_dim=MOE_HIDDEN,
        num_experts=NUM_EXPERTS, num_shared_experts=1, router_top_k=TOP_K,
        router_score_func="softmax", attn_backend="flex", moe_comm_backend="standard",
        non_blocking_capacity_factor=None,
        linear_init=ds._LINEAR_INIT, norm_init=ds._NORM_INIT, depth_init=ds._depth_init,
        depth_experts_init=ds._depth_experts_init,
        rope=ComplexRoPE.Config(dim=rope_dim, max_seq_len=256, theta=10000.0, scaling="yarn",
                                rope_factor=40.0, beta_fast=32.0, beta_slow=1.0,
                                original_seq_len=4096),
    )
    cfg = DeepSeekV3Model.Config(
        vocab_size=VOCAB, dim=DIM,
        tok_embeddings=Embedding.Config(num_embeddings=VOCAB, embedding_dim=DIM,
                                        param_init=ds._EMBEDDING_INIT),
        norm=RMSNorm.Config(normalized_shape=DIM, param_init=ds._NORM_INIT),
        lm_head=Linear.Config(in_features=DIM, out_features=VOCAB,
                              param_init=ds._output_linear_init(DIM)),
        layers=layers,
        mtp_layers=[],
    )
    if attn == "sdpa":
        # CPU: FlexAttention has no backward on CPU and varlen is flash-attention (CUDA) only,
        # so the inner attention kernel becomes torchtitan's own causal SDPA module (the
        # `local_map` region around it, its placements and everything outside are unchanged)
        for layer in cfg.layers:
            layer.attention.inner_attention = ScaledDotProductAttention.Config()
    return cfg, set_deepseek_v3_sharding_config


def _update_from_config(cfg, parallelism, set_sharding, *, enable_sp, enable_ep):
    """`DeepSeekV3Model.Config.update_from_config`, which imports torchtitan.trainer (datasets,
    tokenizers, torchdata): call it when that import works, else do its non-Trainer part."""

    class _Job:  # what update_from_config reads: a ParallelismConfig in `.parallelism`
        pass

    job = _Job()
    job.parallelism = parallelism
    try:
        import torchtitan.trainer  # noqa: F401
    except ImportError:
        from torchtitan.models.common.token_dispatcher import update_ep_token_dispatcher_config

        update_ep_token_dispatcher_config(cfg, job)
        set_sharding(cfg, enable_sp=enable_sp, enable_ep=enable_ep)
    else:
        cfg.update_from_config(config=job)


def make_parallel_dims(ctx, *, tp: int, ep: int = 1, enable_sp: bool = True):
    """torchtitan's ParallelDims (and its meshes) on the check's device, DTensor backend."""
    from tt_torch_compat import install  # same folder

    install()  # torchtitan 0.3.0 on an older torch (2.11): placeholders for names it lacks
    # first: the model package imports torch's FSDP, which registers the "fake" c10d backend
    # that ParallelDims.build_mesh uses for its size-1 mesh dims (as in torchtitan's Trainer)
    import torchtitan.models.deepseek_v3  # noqa: F401
    import torchtitan.distributed.parallel_dims as pd
    import torchtitan.distributed.utils as tt_dist
    from torchtitan.config import ParallelismConfig

    pd.device_type = ctx.device.type  # torchtitan read "cuda" at import on a CPU-only box
    tt_dist.set_spmd_backend("partial_dtensor")
    parallelism = ParallelismConfig(tensor_parallel_degree=tp, expert_parallel_degree=ep,
                                    enable_sequence_parallel=enable_sp,
                                    spmd_backend="partial_dtensor")
    parallel_dims = pd.ParallelDims.from_config(parallelism, ctx.world_size)
    parallel_dims.build_mesh()
    return parallelism, parallel_dims


def harness(ctx):
    import torch

    from torchtitan.components.loss import cross_entropy_loss

    enable_ep = _flag("TT_EP", "0")
    enable_sp = _flag("TT_SP", "1")
    tp = 1 if ctx.reference else 2  # --reference: the same model on one rank, unparallelised
    ep = 2 if enable_ep and not ctx.reference else 1
    if _flag("TT_EXPERTS_FP32", "0"):
        _experts_fp32()
    parallelism, parallel_dims = make_parallel_dims(ctx, tp=tp, ep=ep, enable_sp=enable_sp)

    attn = os.environ.get("TT_ATTN") or ("flex" if ctx.device.type == "cuda" else "sdpa")
    cfg, set_sharding = build_config(attn=attn)
    _update_from_config(cfg, parallelism, set_sharding, enable_sp=enable_sp, enable_ep=enable_ep)

    ctx.seed()
    with torch.device("meta"):
        model = cfg.build()
    model.verify_module_protocol()
    model.parallelize(parallel_dims)  # torchtitan's TP (+EP): parallelize_deepseekv3 minus FSDP/AC/compile
    model.to_empty(device=ctx.device)
    ctx.seed(1)
    with torch.no_grad():
        model.init_weights(buffer_device=None)  # torchtitan's init (params and buffers)
        if os.environ.get("TT_INIT", "global") == "global":
            _shard_global_init(ctx, cfg.build, model)
    model.train()

    tokens = ctx.randint(VOCAB, BATCH, SEQ)
    labels = ctx.randint(VOCAB, BATCH, SEQ, offset=1)
    positions = torch.arange(SEQ, device=ctx.device).unsqueeze(0).expand(BATCH, SEQ).contiguous()

    t0 = time.perf_counter()
    with torch.compiler.set_stance("force_eager"):
        masks = model.get_attention_masks(positions=positions) if attn == "flex" else None
        pred = model(tokens, attention_masks=masks)
        loss = cross_entropy_loss(pred, labels) / labels.numel()
        loss.backward()
    if ctx.device.type == "cuda":
        torch.cuda.synchronize()
    step_s = time.perf_counter() - t0

    dump = os.environ.get("TT_DUMP")
    if dump:
        _dump(dump, ctx.rank, loss, model, step_s)
    return model


def _experts_fp32() -> None:
    """Diagnostic only: run the routed experts' grouped matmuls in float32 through
    `GroupedExperts._grouped_mm`, the seam torchtitan documents for low-precision variants. Its
    forward still rounds inputs and weights to bf16 (elementwise, the same with and without TP);
    only the matmul outputs stay float32, so a one-rank reference and the TP=2 run differ by the
    summation order alone."""
    import torch
    from torchtitan.models.common.moe import GroupedExperts

    def _grouped_mm_fp32(self, *, A, B_t, offs):
        return torch._grouped_mm(A.float(), B_t.float(), offs=offs)

    GroupedExperts._grouped_mm = _grouped_mm_fp32


def _shard_global_init(ctx, build_twin, model) -> None:
    """Give every rank its own shard of one global initialisation.

    torchtitan initialises DTensor parameters with DTensor random ops. Their offset-based RNG
    (each shard draws its own part of one global random tensor) exists only for CUDA-like
    devices: on a CPU mesh every rank draws its shard from the same local generator, so every
    TP shard of every weight is the same numbers (checked: all 26 sharded parameters). Identical
    shards make rank-dependent gradients coincide, which is exactly what the check must not see
    (the first run of this harness, with TT_INIT=dtensor, reported four false DTP902
    double-counts at the routed experts' local_map). So: build the unparallelised twin from the
    same config, initialise it with torchtitan's own initialisers (same seed on every rank), and
    copy each rank's shard of it into the parallel model.
    """
    import torch
    from torch.distributed.tensor import DTensor, distribute_tensor

    ctx.seed(1)
    with torch.device(ctx.device):
        twin = build_twin()
    twin.init_states(buffer_device=None)  # what init_weights (the model-level alias) calls
    full = dict(twin.named_parameters())
    for name, p in model.named_parameters():
        src = full[name].detach()
        # a DTensor-to-DTensor copy_ (same placements): no DTensor exit in the harness itself
        p.copy_(distribute_tensor(src, p.device_mesh, p.placements) if isinstance(p, DTensor) else src)
    del twin




def _dump(path: str, rank: int, loss, model, step_s: float | None = None) -> None:
    import torch
    from torch.distributed.tensor import DTensor

    grads = {}
    for name, p in model.named_parameters():
        g = p.grad
        if g is None:
            continue
        g = g.to_local() if isinstance(g, DTensor) else g
        grads[name] = float(g.detach().double().norm())
    out = {"loss": float(loss.detach().double()) if not isinstance(loss, DTensor)
           else float(loss.detach().to_local().double()), "grad_norms": grads,
           "torch": torch.__version__, "step_seconds": step_s}
    with open(f"{path}.rank{rank}.json", "w") as fh:
        json.dump(out, fh, indent=1, sort_keys=True)

