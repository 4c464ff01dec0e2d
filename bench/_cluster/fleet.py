"""The simulated fleet: what a node of each tier costs per step, and where the numbers
come from. Every figure that is not measured is marked as an assumption in ``notes``."""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType

from inhouse.fleet.nodes import NodeKind, NodeSpec
from inhouse.fleet.scheduler import kv_bytes_per_token
from inhouse.protocol.types import Tier

MODEL = "assistant"
"""The one model name callers use; every node serves it (a 70B at the center, an 8B at the
edge), as an operator would register one alias on both tiers."""

GATEWAY_OVERHEAD_S = 0.00084
"""Measured: what the gateway adds at the median (docs/benchmarks.md, gateway overhead)."""


@dataclass(frozen=True, slots=True)
class NodeType:
    """One kind of node: its model's step costs, batch size, memory and network distance."""

    tier: Tier
    model: str
    hardware: str
    step_base_s: float
    """``a`` of a decode step of ``a + b x batch`` seconds."""
    step_per_seq_s: float
    """``b``: what each sequence in the batch adds to a step."""
    prefill_per_token_s: float
    capacity: int
    """Sequences at once (the engine's ``max_num_seqs``)."""
    prefill_chunk_tokens: int
    """Prompt tokens per step at most (chunked prefill, ``max_num_batched_tokens``)."""
    kv_memory_bytes: int
    kv_bytes_per_token: int
    gpus: int
    rtt_s: float
    """Network round trip between the users' site and the node."""
    cost_per_1k_tokens: float

    def step_s(self, batch: int, prefill_tokens: int = 0) -> float:
        return (
            self.step_base_s
            + self.step_per_seq_s * batch
            + self.prefill_per_token_s * prefill_tokens
        )

    def idle_prefill_s(self, prompt_tokens: int) -> float:
        """Time to the first token on an idle node: the floor no scheduling can beat."""
        steps = max(1, -(-prompt_tokens // self.prefill_chunk_tokens))
        return steps * self.step_base_s + self.prefill_per_token_s * prompt_tokens

    def full_batch_seconds(self, prompt_tokens: int, output_tokens: int) -> float:
        """Node-seconds one request takes when the node runs at full batch: its prefill
        plus its share of every decode step (the measure of capacity and of work)."""
        per_token = self.step_s(self.capacity) / self.capacity
        return self.prefill_per_token_s * prompt_tokens + per_token * max(output_tokens - 1, 0)


@dataclass(frozen=True, slots=True)
class FleetProfile:
    name: str
    center: NodeType
    edge: NodeType
    center_nodes: int
    edge_nodes: int
    notes: tuple[str, ...]
    """Where each number comes from; assumptions say so."""

    def node_types(self) -> list[NodeType]:
        """One entry per node: the center nodes first, then the edge nodes."""
        return [self.center] * self.center_nodes + [self.edge] * self.edge_nodes

    def specs(self) -> list[NodeSpec]:
        specs = []
        for tier, node_type, count in (
            (Tier.CENTER, self.center, self.center_nodes),
            (Tier.EDGE, self.edge, self.edge_nodes),
        ):
            for index in range(count):
                node_id = f"{tier.value}-{index:02d}"
                specs.append(
                    NodeSpec(
                        id=node_id,
                        name=node_id,
                        url=f"http://{node_id}.fleet:8000/v1",
                        tier=tier,
                        kind=NodeKind.VLLM,
                        models={MODEL: node_type.model},
                        capacity=node_type.capacity,
                        memory_bytes=node_type.kv_memory_bytes,
                        cost_per_1k_tokens=node_type.cost_per_1k_tokens,
                    )
                )
        return specs


GIB = 1024**3

# Center: Llama-3.3-70B-Instruct, fp8, tensor-parallel on 2 x H100 80 GB. NVIDIA's NIM
# benchmark of exactly that setup (docs.nvidia.com/nim/benchmarking/llm, "Performance",
# Llama-3.3-70b-instruct, NIM 1.8.0, 5000 input / 500 output tokens) gives TTFT 406.77 ms and
# ITL 18.58 ms at concurrency 1, output throughput 51.67 / 218.48 / 623.4 / 814.37 tokens/s at
# 1 / 5 / 25 / 50 and ~920 at saturation. a = 18 ms, b = 0.07 ms and prefill 0.078 ms/token
# reproduce those throughputs within 3% (the prefill time being paid once per 500 tokens).
CENTER_70B = NodeType(
    tier=Tier.CENTER,
    model="llama-3.3-70b-instruct-fp8",
    hardware="2x H100 80GB",
    step_base_s=0.018,
    step_per_seq_s=0.00007,
    prefill_per_token_s=0.000078,
    capacity=64,
    prefill_chunk_tokens=2048,
    kv_memory_bytes=int(0.9 * 160 * GIB) - 70 * GIB,
    kv_bytes_per_token=kv_bytes_per_token(80, 8, 128),
    gpus=2,
    rtt_s=0.030,
    cost_per_1k_tokens=1.0,
)

# Edge: Llama-3.1-8B-Instruct, fp8, one L40S 48 GB per branch. No published figure of this
# pair was at hand: the same NIM page's Llama-3.1-8B figures (ITL 4.63 ms at concurrency 1,
# 7.57 ms at 100), taken to be from one H100-class GPU, are scaled by memory bandwidth
# (3.35 / 0.864 TB/s = 3.9x) for the decode step; prefill is 16 GFLOP per token at 40% of the
# L40S's 362 dense fp8 TFLOPS. All of it is an assumption.
EDGE_8B = NodeType(
    tier=Tier.EDGE,
    model="llama-3.1-8b-instruct-fp8",
    hardware="1x L40S 48GB",
    step_base_s=0.018,
    step_per_seq_s=0.00012,
    prefill_per_token_s=0.00011,
    capacity=32,
    prefill_chunk_tokens=2048,
    kv_memory_bytes=int(0.9 * 48 * GIB) - 9 * GIB,
    kv_bytes_per_token=kv_bytes_per_token(32, 8, 128),
    gpus=1,
    rtt_s=0.002,
    cost_per_1k_tokens=0.2,
)

# Edge, fast: the same 8B on an H100-class GPU, with NIM 1.8.0's Llama-3.1-8B figures taken
# as they are (ITL 4.63 ms at concurrency 1, 7.57 ms at 100); prefill 0.03 ms/token is an
# assumption (16 GFLOP per token at about half of the GPU's dense fp8 rate). A sensitivity
# case: edge nodes much faster per token than the center, as the article's premise has it.
EDGE_8B_FAST = NodeType(
    tier=Tier.EDGE,
    model="llama-3.1-8b-instruct-fp8",
    hardware="1x H100 80GB",
    step_base_s=0.0046,
    step_per_seq_s=0.00003,
    prefill_per_token_s=0.00003,
    capacity=32,
    prefill_chunk_tokens=2048,
    kv_memory_bytes=int(0.9 * 80 * GIB) - 9 * GIB,
    kv_bytes_per_token=kv_bytes_per_token(32, 8, 128),
    gpus=1,
    rtt_s=0.002,
    cost_per_1k_tokens=0.2,
)

# Edge, measured: the built-in SmolLM2-135M under llama.cpp (Q4_1, 2 threads) on a 2-vCPU
# machine (docs/benchmarks.md, local engine): 78.8 tokens/s at 1 client, 151.6 at 16 and 158.0
# at 32, i.e. steps of 12.7, 105.5 and 202.5 ms: a = 6.5 ms, b = 6.2 ms. Prefill is not
# measured there: 4 ms/token is an assumption (0.27 GFLOP per token at ~70 GFLOP/s).
EDGE_CPU_135M = NodeType(
    tier=Tier.EDGE,
    model="smollm2-135m-instruct-q4_1",
    hardware="2 vCPU, llama.cpp",
    step_base_s=0.0065,
    step_per_seq_s=0.0062,
    prefill_per_token_s=0.004,
    capacity=16,
    prefill_chunk_tokens=512,
    kv_memory_bytes=4 * GIB,
    kv_bytes_per_token=kv_bytes_per_token(30, 3, 64),
    gpus=0,
    rtt_s=0.002,
    cost_per_1k_tokens=0.05,
)

_COMMON_NOTES = (
    "center step a=18 ms, b=0.07 ms/seq, prefill 0.078 ms/token: fitted to NVIDIA NIM 1.8.0, "
    "Llama-3.3-70B fp8 TP2 on 2x H100 (published)",
    "center KV memory 0.9 x 160 GiB - 70 GiB of weights, 320 KiB/token (80 layers, 8 KV "
    "heads of 128, 16-bit): derived",
    "round trips: edge 2 ms (same site), center 30 ms (WAN to the data center): assumptions",
    "gateway overhead 0.84 ms: measured (docs/benchmarks.md)",
    "batch sizes 64 (center) and 32 (edge), prefill chunks of 2048 tokens: assumptions",
)

GPU_FLEET = FleetProfile(
    name="gpu",
    center=CENTER_70B,
    edge=EDGE_8B,
    center_nodes=8,
    edge_nodes=20,
    notes=(
        *_COMMON_NOTES,
        "edge step a=18 ms, b=0.12 ms/seq: NIM 1.8.0's Llama-3.1-8B figures, taken as "
        "H100-class, scaled by memory bandwidth to an L40S: assumption",
        "edge prefill 0.11 ms/token: 16 GFLOP/token at 40% of 362 fp8 TFLOPS: assumption",
    ),
)

FAST_EDGE_FLEET = FleetProfile(
    name="fast-edge",
    center=CENTER_70B,
    edge=EDGE_8B_FAST,
    center_nodes=8,
    edge_nodes=20,
    notes=(
        *_COMMON_NOTES,
        "edge step a=4.6 ms, b=0.03 ms/seq: NIM 1.8.0's Llama-3.1-8B figures as published, "
        "taken as one H100-class GPU: assumption",
        "edge prefill 0.03 ms/token: assumption",
    ),
)

CPU_EDGE_FLEET = FleetProfile(
    name="cpu-edge",
    center=CENTER_70B,
    edge=EDGE_CPU_135M,
    center_nodes=8,
    edge_nodes=20,
    notes=(
        *_COMMON_NOTES,
        "edge step a=6.5 ms, b=6.2 ms/seq: measured, SmolLM2-135M under llama.cpp on 2 vCPU "
        "(docs/benchmarks.md)",
        "edge prefill 4 ms/token: assumption (not measured)",
    ),
)

PROFILES = MappingProxyType(
    {profile.name: profile for profile in (GPU_FLEET, FAST_EDGE_FLEET, CPU_EDGE_FLEET)}
)
