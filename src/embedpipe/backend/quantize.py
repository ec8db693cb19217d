"""Stage 3 of the int8 backend: ONNX Runtime's dynamic int8 quantization of the (fused) graph.

Owns `quantize` (int8 weights with one scale per output channel, activations quantized per batch at
run time, so no calibration data is needed) and `kept_in_fp32` (the one matrix product left in fp32:
the first block's feed-forward output, whose GELU activations have the largest outliers).

Example:
    >>> from embedpipe.backend.quantize import quantize           # doctest: +SKIP
    >>> quantize("model.fused.onnx", "model.int8.onnx")           # doctest: +SKIP
    {'fp32_matmuls': ['/model/encoder/layer.0/output/dense/MatMul']}
"""

from __future__ import annotations

import os
from pathlib import Path

from embedpipe.backend.utils import quiet_onnxruntime


def kept_in_fp32(onnx_path: str | Path) -> list[str]:
    """The MatMul left unquantized: the first feed-forward output (the first MatMul fed by an activation)."""
    import onnx

    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    made_by = {output: node for node in graph.node for output in node.output}

    def after_activation(name: str, depth: int = 0) -> bool:
        node = made_by.get(name)
        if node is None or depth > 6:
            return False
        if node.op_type in ("Erf", "Gelu", "FastGelu", "BiasGelu", "Tanh", "Sigmoid", "Relu"):
            return True
        if node.op_type in ("Mul", "Add", "Div", "Cast"):
            return any(after_activation(i, depth + 1) for i in node.input)
        return False

    return [node.name for node in graph.node if node.op_type == "MatMul" and after_activation(node.input[0])][:1]


def quantize(fp32_path: str | Path, int8_path: str | Path) -> dict:
    """int8 weights, one scale per output channel, for every MatMul/Attention with constant weights but
    the first feed-forward output; activations quantized per batch (dynamic).

    Weights use 7 bits (`reduce_range`): ONNX Runtime's u8s8 kernels on x86 CPUs without VNNI (AVX2 only)
    can saturate their 16-bit intermediate sums with full-range weights, which pushed an EmbeddingGemma-like
    model below the cosine threshold of tests/unit/test_embed_int8.py on such a CPU; with 7 bits the
    vectors stay close to fp32 on every x86 CPU.
    """
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    excluded = kept_in_fp32(fp32_path)
    with quiet_onnxruntime():
        quantize_dynamic(
            str(fp32_path),
            str(int8_path),
            op_types_to_quantize=["MatMul", "Attention"],
            per_channel=True,
            weight_type=QuantType.QInt8,
            nodes_to_exclude=excluded,
            reduce_range=True,
            use_external_data_format=os.path.getsize(fp32_path) > 1_800_000_000,
            # Fused operators (Attention, SkipLayerNormalization) have no ONNX shape inference: assume float.
            extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
        )
    return {"fp32_matmuls": excluded}
