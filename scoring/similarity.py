"""Cosine top-K between item vectors with onnxruntime: one small graph (MatMul, an optional
additive mask, TopK), so the product and the selection run in onnxruntime's threads without a
[n_items, n_items] matrix ever being held.

The two graphs (with and without the mask) ship as files beside this module, so the scoring job
needs no ``onnx`` package (its import alone takes most of a second); ``build_graph`` makes them
with ``onnx.helper`` and ``python -m scoring.similarity`` rewrites the files (a test checks that
they are what it builds).
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from importlib import resources

import numpy as np
import onnxruntime as ort

from .sessions import make_session_from_bytes

QUERY_ROWS = 1_024
"""Query items per call: a [QUERY_ROWS, n_items] similarity block (110 MB at 27K items), the size
that ran fastest at the 20M shape (docs/performance.md)."""
OPSET = 17


GRAPH_FILES = {False: "cosine_top_k.onnx", True: "cosine_top_k_masked.onnx"}
"""The shipped graph files (in ``scoring/graphs/``), without and with the rules' mask."""


def graph_bytes(with_penalty: bool) -> bytes:
    """The shipped graph."""
    return resources.files("scoring").joinpath("graphs", GRAPH_FILES[with_penalty]).read_bytes()


def build_graph(with_penalty: bool) -> bytes:
    """``values, indices = TopK(queries @ keys (+ penalty), k)``, largest first, ties to the
    smaller index (the ONNX TopK rule)."""
    from onnx import TensorProto, helper
    inputs = [helper.make_tensor_value_info("queries", TensorProto.FLOAT, ["rows", "dim"]),
              helper.make_tensor_value_info("keys", TensorProto.FLOAT, ["dim", "items"]),
              helper.make_tensor_value_info("k", TensorProto.INT64, [1])]
    nodes = [helper.make_node("MatMul", ["queries", "keys"], ["scores"])]
    scored = "scores"
    if with_penalty:
        inputs.append(helper.make_tensor_value_info("penalty", TensorProto.FLOAT, [1, "items"]))
        nodes.append(helper.make_node("Add", ["scores", "penalty"], ["masked"]))
        scored = "masked"
    nodes.append(helper.make_node("TopK", [scored, "k"], ["values", "indices"], axis=1, largest=1, sorted=1))
    outputs = [helper.make_tensor_value_info("values", TensorProto.FLOAT, ["rows", "top"]),
               helper.make_tensor_value_info("indices", TensorProto.INT64, ["rows", "top"])]
    model = helper.make_model(helper.make_graph(nodes, "cosine_top_k", inputs, outputs),
                              opset_imports=[helper.make_opsetid("", OPSET)], producer_name="recjob-scoring")
    model.ir_version = 8
    return model.SerializeToString()


@dataclass
class SimilarItems:
    """Each item's ``k`` most similar other items among those ``penalty`` leaves eligible."""

    session: ort.InferenceSession
    keys: np.ndarray
    """The unit-length item vectors, transposed: float32 [D, n_items]."""
    penalty: np.ndarray | None
    """float32 [1, n_items]: 0 for items that may be listed, -inf for the rest; None: all may."""

    @classmethod
    def open(cls, vectors: np.ndarray, penalty: np.ndarray | None, threads: int, device: str = "cpu") -> "SimilarItems":
        session = make_session_from_bytes(graph_bytes(penalty is not None), threads, device)
        return cls(session, np.ascontiguousarray(vectors.T, dtype=np.float32),
                   None if penalty is None else penalty.reshape(1, -1).astype(np.float32))

    @property
    def n_items(self) -> int:
        return int(self.keys.shape[1])

    def top(self, items: np.ndarray, vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` items most similar to each of ``items`` (indices, their vectors given), the
        item itself left out: similarities float32 [B, k'] (-inf where fewer eligible items exist)
        and item indices int64 [B, k'], ``k' = min(k, n_items - 1)``."""
        width = min(k + 1, self.n_items)
        feeds = {"queries": np.ascontiguousarray(vectors, dtype=np.float32), "keys": self.keys,
                 "k": np.array([width], np.int64)}
        if self.penalty is not None:
            feeds["penalty"] = self.penalty
        values, indices = self.session.run(["values", "indices"], feeds)
        # The item itself goes last (stable: the rest keep their order); where it is not among the
        # best k + 1, the last of them goes.
        order = np.argsort(indices == np.asarray(items)[:, None], axis=1, kind="stable")[:, :min(k, self.n_items - 1)]
        return np.take_along_axis(values, order, 1), np.take_along_axis(indices, order, 1)


def main() -> int:
    """Rewrite the shipped graph files from ``build_graph`` (needs the ``onnx`` package)."""
    folder = resources.files("scoring").joinpath("graphs")
    for with_penalty, name in GRAPH_FILES.items():
        with resources.as_file(folder.joinpath(name)) as path:
            path.write_bytes(build_graph(with_penalty))
            print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
