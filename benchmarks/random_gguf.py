"""A random-weight GGUF of a real model's exact shape, made from a small metadata file.

    python -m benchmarks.random_gguf --extract qwen2.5-1.5b META.json.xz   # here: from the packaged model
    python -m benchmarks.random_gguf META.json.xz OUT.gguf [--type Q8_0]   # anywhere with numpy + gguf-py

Why: the packaged Qwen2.5-Coder-1.5B Q4_K_M (1.1 GB) cannot travel to the borrowed GPU machine; its
metadata can (≈1 MB: hyperparameters, the whole tokenizer, chat template, the table of tensors).
The GGUF written from it has every tensor of the real one, same name, shape and quantization type
(Q4_K and Q6_K blocks filled with random bytes, their f16 scales set so weights have a std of
0.02), so llama-server loads the same architecture, reads the same bytes per token and runs the
same kernels: its speed is the real model's. Its text is noise: it says so in `general.name`.

`gguf` is llama.cpp's gguf-py: not a dependency of this project; on the GPU machine it comes from
the carried llama.cpp sources (PYTHONPATH=.../gguf-py), here from the same sdist.
"""

from __future__ import annotations

import argparse
import json
import lzma
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

STD = 0.02
"""Weights' standard deviation: a trained model's order of magnitude, so activations stay finite."""
SCALE_FIELDS: dict[str, tuple[tuple[int, float], ...]] = {
    "Q4_0": ((0, 1.0),),
    "Q8_0": ((0, 1.0),),
    "Q4_K": ((0, 1.0), (2, 7.5)),
    "Q5_K": ((0, 1.0), (2, 15.5)),
    "Q6_K": ((208, 1.0),),
}
"""Per quantization type: byte offset of each f16 scale in a block and its value relative to `d`
(a K-quant's `dmin` = the mean quant, so weights centre on 0). All other bytes are any bits."""
FLOAT_TYPES = {"F32": np.float32, "F16": np.float16}
RANDOM_NOTE = "RANDOM WEIGHTS, not a usable model"


def _gguf() -> Any:
    try:
        import gguf
    except ImportError:
        raise SystemExit("needs llama.cpp's gguf-py: PYTHONPATH=<llama.cpp>/gguf-py (or pip install gguf)") from None
    return gguf


def extract(model: str, meta: Path) -> None:
    """Write `model`'s metadata and tensor table (not its weights) to `meta`, JSON compressed with xz."""
    from servers.llm.models import MODELS, resolve  # only here: needs the project's environment

    gguf = _gguf()
    path = resolve(model)
    reader = gguf.GGUFReader(path)
    kv = []
    for key, field in reader.fields.items():
        if key.startswith("GGUF."):  # the header (version, counts), not metadata
            continue
        types = [t.name for t in field.types]
        if types[0] == "ARRAY" and len(types) != 2:
            raise SystemExit(f"{path}: {key} is a nested array, which this format does not hold")
        kv.append([key, types[0], types[1] if len(types) == 2 else None, field.contents()])
    tensors = [[t.name, [int(n) for n in t.shape], t.tensor_type.name] for t in reader.tensors]
    source = {"model": model, "file": path.name}
    if model in MODELS:
        source |= {"title": MODELS[model].title, "sha256": MODELS[model].sha256}
    text = json.dumps({"source": source, "kv": kv, "tensors": tensors}, ensure_ascii=False, separators=(",", ":"))
    meta.parent.mkdir(parents=True, exist_ok=True)
    meta.write_bytes(lzma.compress(text.encode(), preset=9 | lzma.PRESET_EXTREME))
    print(f"{meta}: {len(kv)} keys, {len(tensors)} tensors, {meta.stat().st_size / 1e6:.2f} MB")


def load_meta(meta: Path) -> dict[str, Any]:
    return json.loads(lzma.decompress(meta.read_bytes()))


def _unit_std(gguf: Any, qtype: Any) -> float:
    """The std of this type's weights when its scales are the relative values (d = 1): 256 random blocks."""
    _, type_size = gguf.GGML_QUANT_SIZES[qtype]
    blocks = np.random.default_rng(0).integers(0, 256, size=(256, type_size), dtype=np.uint8)
    _set_scales(blocks, qtype.name, 1.0)
    return float(gguf.quants.dequantize(blocks, qtype).std())


def _set_scales(blocks: np.ndarray, type_name: str, d: float) -> None:
    for offset, relative in SCALE_FIELDS[type_name]:
        blocks[:, offset : offset + 2] = np.frombuffer(np.float16(d * relative).tobytes(), np.uint8)


def random_tensor(
    gguf: Any, rng: np.random.Generator, name: str, ne: list[int], type_name: str, d: float
) -> np.ndarray:
    """The tensor's bytes, shaped (rows..., bytes per row) as GGUFWriter takes raw data."""
    rows = tuple(reversed(ne[1:]))
    if type_name in FLOAT_TYPES:
        dtype = FLOAT_TYPES[type_name]
        if name.endswith("norm.weight"):
            values = np.ones((*rows, ne[0]), dtype)  # a norm's gain: 1, as a fresh model has
        else:
            values = rng.normal(0.0, STD, (*rows, ne[0])).astype(dtype)
        return values.view(np.uint8)
    qtype = gguf.GGMLQuantizationType[type_name]
    block_size, type_size = gguf.GGML_QUANT_SIZES[qtype]
    n_blocks = int(np.prod(rows, dtype=np.int64)) * (ne[0] // block_size)
    blocks = rng.integers(0, 256, size=(n_blocks, type_size), dtype=np.uint8)
    _set_scales(blocks, type_name, d)
    return blocks.reshape(*rows, ne[0] // block_size * type_size)


def write(meta_path: Path, out: Path, weight_type: str | None = None, seed: int = 0) -> None:
    """Write the random GGUF (through a temporary file: an interrupted run leaves none)."""
    gguf = _gguf()
    meta = load_meta(meta_path)
    tensors = meta["tensors"]
    if weight_type:  # every quantized tensor as this type instead (floats stay floats)
        tensors = [[n, ne, t if t in FLOAT_TYPES else weight_type] for n, ne, t in tensors]
    used = {t for _, _, t in tensors} - set(FLOAT_TYPES)
    if unknown := used - set(SCALE_FIELDS):
        raise SystemExit(f"no random fill for {', '.join(sorted(unknown))}; known: {', '.join(SCALE_FIELDS)}")
    d = {t: STD / _unit_std(gguf, gguf.GGMLQuantizationType[t]) for t in used}

    kv = {key: (vtype, sub, value) for key, vtype, sub, value in meta["kv"]}
    arch = kv.pop("general.architecture")[2]
    name = kv.get("general.name", ("STRING", None, meta["source"]["model"]))[2]
    kv["general.name"] = ("STRING", None, f"{name} ({RANDOM_NOTE})")
    if weight_type and hasattr(gguf.LlamaFileType, f"MOSTLY_{weight_type}"):
        kv["general.file_type"] = ("UINT32", None, int(gguf.LlamaFileType[f"MOSTLY_{weight_type}"]))

    tmp = out.with_name(f"{out.name}.tmp-{os.getpid()}")
    writer = gguf.GGUFWriter(tmp, arch)
    try:
        for key, (vtype, sub, value) in kv.items():
            if key == "general.alignment":
                writer.data_alignment = int(value)
            writer.add_key_value(key, value, gguf.GGUFValueType[vtype], gguf.GGUFValueType[sub] if sub else None)
        for name, ne, type_name in tensors:
            qtype = gguf.GGMLQuantizationType[type_name]
            byte_shape = gguf.quant_shape_to_byte_shape(tuple(reversed(ne)), qtype)
            nbytes = int(np.prod(byte_shape, dtype=np.int64))
            writer.add_tensor_info(name, byte_shape, np.dtype(np.uint8), nbytes, raw_dtype=qtype)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        rng = np.random.default_rng(seed)
        for name, ne, type_name in tensors:
            writer.write_tensor_data(random_tensor(gguf, rng, name, ne, type_name, d.get(type_name, 1.0)))
        writer.close()
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    kinds = ", ".join(f"{sum(t == k for _, _, t in tensors)} {k}" for k in sorted({t for _, _, t in tensors}))
    print(f"{out}: {arch}, {len(tensors)} tensors ({kinds}), {out.stat().st_size / 1e9:.2f} GB, {RANDOM_NOTE}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.random_gguf",
        description="Write a random-weight GGUF of a real model's shape from a metadata file (or extract one).",
    )
    parser.add_argument("meta", type=Path, help="metadata file (.json.xz), read or, with --extract, written")
    parser.add_argument("out", type=Path, nargs="?", help="the GGUF to write")
    parser.add_argument("--extract", metavar="MODEL", help="write META from this packaged model (or .gguf path)")
    parser.add_argument(
        "--type", dest="weight_type", help=f"quantized tensors as this type ({', '.join(SCALE_FIELDS)})"
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    if args.extract:
        extract(args.extract, args.meta)
    elif args.out is None:
        parser.error("OUT is required (or --extract MODEL)")
    else:
        write(args.meta, args.out, args.weight_type, args.seed)


if __name__ == "__main__":
    main()
