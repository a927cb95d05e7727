"""GPU memory on paper, per deployment target: does the default LLM quantization fit beside ASR and TTS?

    python -m servers.gpu_budget          prints the table that docs/deploy-docker.md carries

Sizes are decimal GB. Sources: LLM file sizes from the unsloth/Nemotron-3-Nano-30B-A3B-GGUF listing;
KV and Mamba state from the model's config (52 layers: 6 attention with 2 KV heads of 128, 23 Mamba-2
with d_inner 4096, state 128, 8 groups, conv 4, 64 heads); ASR and TTS peaks measured on the H200
(`benchmarks/results/h200-2026-11-30/`: Nemotron Speech bf16 at 16 streams, Magpie fp32 at 4 sessions);
a CUDA context is 0.3-0.6 GB per process (PyTorch and llama.cpp reports); llama.cpp's compute buffer is
an estimate. A target fits when the sum leaves `MIN_HEADROOM` of the card free.
"""

from __future__ import annotations

from dataclasses import dataclass

GB = 1e9
MIB = 1 << 20

LLM_FILE_GB = {"IQ4_XS": 18.3, "UD-Q4_K_XL": 22.8, "Q4_K_M": 24.6}
"""Nemotron 3 Nano 30B-A3B GGUF sizes (unsloth). The file is what llama.cpp puts on the GPU."""
KV_BYTES_PER_TOKEN = 6 * 2 * 2 * 128 * 2
"""6 attention layers x (K, V) x 2 KV heads x head dim 128 x f16."""
RECURRENT_BYTES_PER_SLOT = 23 * ((4096 + 2 * 8 * 128) * 3 * 4 + 64 * 64 * 128 * 4)
"""23 Mamba-2 layers x (conv state: (d_inner + 2 groups x state) x (kernel - 1) + SSM state: heads x
head dim x state), f32: ~50 MB per slot, whatever the context."""
LLM_COMPUTE_GB = 1.0
CUDA_CONTEXT_GB = 0.5
ASR_GB = 3.8
TTS_GB = 2.3
MIN_HEADROOM = 0.10
COMPOSE_QUANT, COMPOSE_CTX, COMPOSE_SLOTS = "IQ4_XS", 8192, 1
"""The compose LLM: the quantization `servers.model_fetch` fetches by default, the only one that fits a
32 GB card beside ASR and TTS; docker/compose.yaml's `--ctx-size` and `--parallel` (tests check they agree)."""
SPARK_QUANT = "Q4_K_M"
"""A DGX Spark has the memory for the larger quantization (docs/deploy-docker.md's Spark quick start sets it)."""
MODAL_QUANT, MODAL_CTX_PER_SLOT, MODAL_SLOTS = "Q4_K_M", 8192, 4
"""Modal's LLM: an L40S of its own fits the larger quant and four slots (modal_app.py uses these)."""


@dataclass(frozen=True)
class LLMShape:
    """The LLM as configured: quantization, context per slot, slots."""

    quant: str
    ctx_per_slot: int
    slots: int

    def items(self) -> list[tuple[str, float]]:
        kv = KV_BYTES_PER_TOKEN * self.ctx_per_slot * self.slots / GB
        recurrent = RECURRENT_BYTES_PER_SLOT * self.slots / GB
        return [
            (f"LLM weights ({self.quant})", LLM_FILE_GB[self.quant]),
            (f"LLM KV + Mamba state ({self.slots} x {self.ctx_per_slot} tokens)", kv + recurrent),
            ("LLM compute buffers", LLM_COMPUTE_GB),
        ]


@dataclass(frozen=True)
class Target:
    """A card or container and what it must hold."""

    name: str
    capacity_gb: float
    runs: str
    """What shares the memory: "all" (ASR, TTS and LLM on one GPU) or one of "llm", "asr", "tts"."""
    llm: LLMShape | None = None
    others: tuple[tuple[str, float], ...] = ()
    """Whatever else lives in this memory (a desktop, the OS and host side of a unified-memory machine)."""

    def items(self) -> list[tuple[str, float]]:
        items: list[tuple[str, float]] = []
        if self.llm is not None:
            items += self.llm.items()
        if self.runs in ("all", "asr"):
            items.append(("ASR (Nemotron Speech 0.6B, 16 streams)", ASR_GB))
        if self.runs in ("all", "tts"):
            items.append(("TTS (Magpie 357M + codec, 4 sessions)", TTS_GB))
        processes = 3 if self.runs == "all" else 1
        items.append((f"CUDA contexts ({processes})", processes * CUDA_CONTEXT_GB))
        return items + list(self.others)

    @property
    def used_gb(self) -> float:
        return sum(gb for _, gb in self.items())

    @property
    def headroom(self) -> float:
        return 1 - self.used_gb / self.capacity_gb

    @property
    def fits(self) -> bool:
        return self.headroom >= MIN_HEADROOM


def targets(compose_llm: LLMShape, spark_llm: LLMShape, modal_llm: LLMShape) -> list[Target]:
    """The deployment targets with the LLM shapes that compose and Modal are configured with."""
    modal_gpus = {"L40S": 46068 * MIB / GB, "A100-40GB": 40960 * MIB / GB, "H100": 81559 * MIB / GB}
    spark_host = (("OS, bot and desktop", 10.0), ("host side of ASR, TTS, llama-server", 8.0))
    return [
        Target("RTX 5090 (compose)", 32607 * MIB / GB, "all", compose_llm, (("desktop on the same GPU", 1.0),)),
        Target("DGX Spark (compose, 128 GB unified)", 128.0, "all", spark_llm, spark_host),
        *(Target(f"Modal {gpu}: LLM container", gb, "llm", modal_llm) for gpu, gb in modal_gpus.items()),
        Target("Modal L40S: ASR container", modal_gpus["L40S"], "asr"),
        Target("Modal L40S: TTS container", modal_gpus["L40S"], "tts"),
    ]


def render(rows: list[Target]) -> str:
    """A markdown table: one row per target, its parts, total, capacity and headroom."""
    lines = ["| target | what uses the memory (GB) | total | card | free |", "|---|---|---|---|---|"]
    for t in rows:
        parts = "; ".join(f"{name} {gb:.1f}" for name, gb in t.items())
        verdict = "" if t.fits else " **does not fit**"
        lines.append(f"| {t.name} | {parts} | {t.used_gb:.1f} | {t.capacity_gb:.1f} | {t.headroom:.0%}{verdict} |")
    return "\n".join(lines)


def configured() -> list[Target]:
    """The targets with the LLM shapes the deployments are configured with."""
    return targets(
        compose_llm=LLMShape(COMPOSE_QUANT, COMPOSE_CTX, COMPOSE_SLOTS),
        spark_llm=LLMShape(SPARK_QUANT, COMPOSE_CTX, COMPOSE_SLOTS),
        modal_llm=LLMShape(MODAL_QUANT, MODAL_CTX_PER_SLOT, MODAL_SLOTS),
    )


def main() -> None:
    print(render(configured()))


if __name__ == "__main__":
    main()
