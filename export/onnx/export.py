"""Write a torch graph to a single self-contained ONNX file, checked and labelled.

Exporter choice, recorded in every manifest: torch's TorchScript-based exporter
(``dynamo=False``), opset 17, weights embedded in the ``.onnx`` file. The dynamo exporter
(torch 2.13's default) gives the same operators but is much slower per graph and needs the
extra ``onnxscript`` package (docs/decisions.md); parity is checked either way.
"""
from __future__ import annotations

import io
import json
import warnings
from pathlib import Path
from typing import Any

import onnx
import torch
from torch import nn

from ..config import ONNX_OPSET

EXPORTER_SETTINGS: dict[str, Any] = {
    "exporter": "torchscript (torch.onnx.export, dynamo=False)",
    "opset": ONNX_OPSET,
    "external_data": False,
    "do_constant_folding": True,
    "dynamic_axes": "batch dimension of every input and output",
}


def export_graph(graph: nn.Module, example: tuple[torch.Tensor, ...], input_names: tuple[str, ...],
                 path: Path, metadata: dict[str, Any], output_names: tuple[str, ...]) -> onnx.ModelProto:
    """Export ``graph`` with a dynamic batch axis, attach ``metadata`` and check the result."""
    graph.eval()
    dynamic_axes = {name: {0: "batch"} for name in (*input_names, *output_names)}
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        # torch 2.13 marks the TorchScript exporter deprecated; the choice is deliberate (see above).
        warnings.simplefilter("ignore", category=DeprecationWarning)
        warnings.simplefilter("ignore", category=FutureWarning)
        warnings.simplefilter("ignore", category=UserWarning)
        warnings.simplefilter("ignore", category=torch.jit.TracerWarning)
        torch.onnx.export(graph, example, buffer, dynamo=False, opset_version=ONNX_OPSET,
                          input_names=list(input_names), output_names=list(output_names),
                          dynamic_axes=dynamic_axes, do_constant_folding=True)
    proto = onnx.load_from_string(buffer.getvalue())
    for key, value in metadata.items():
        entry = proto.metadata_props.add()
        entry.key = key
        entry.value = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    proto.producer_name = "movielens-batch-recs"
    onnx.checker.check_model(proto, full_check=True)
    onnx.save_model(proto, str(path), save_as_external_data=False)
    return proto
