"""onnxruntime sessions over the all-items graphs: a batch of users in, ``[B, n_items]`` out."""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import onnxruntime as ort

from .bundle import ALL_ITEMS_INPUTS, OUTPUTS, Bundle
from .errors import BundleError

_EXPECTED_TYPES = {"user": "tensor(int64)", "history_items": "tensor(int64)",
                   "history_ratings": "tensor(float)"}


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask, not the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def providers(device: str) -> list[str]:
    """onnxruntime execution providers for ``device`` ('cpu' or 'cuda')."""
    if device == "cuda":
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise BundleError("--device cuda: onnxruntime has no CUDA provider here "
                              "(install the 'gpu' extra: onnxruntime-gpu)")
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def make_session(path: str, threads: int, device: str = "cpu") -> ort.InferenceSession:
    """A session with explicit thread counts: intra-op = ``threads``, one inter-op thread."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    try:
        return ort.InferenceSession(path, sess_options=options, providers=providers(device))
    except (RuntimeError, ort.capi.onnxruntime_pybind11_state.Fail,
            ort.capi.onnxruntime_pybind11_state.InvalidProtobuf,
            ort.capi.onnxruntime_pybind11_state.InvalidGraph) as exc:
        raise BundleError(f"{path}: onnxruntime cannot load this model ({str(exc).splitlines()[0][:300]})") from exc


@dataclass
class ModelScorer:
    """Scores every item for batches of users with one model's all-items graph."""

    model: str
    session: ort.InferenceSession
    bundle: Bundle

    @classmethod
    def open(cls, bundle: Bundle, model: str, threads: int, device: str = "cpu") -> "ModelScorer":
        path = bundle.graph_path(model)
        session = make_session(str(path), threads, device)
        expected = ALL_ITEMS_INPUTS[model]
        inputs = {i.name: i.type for i in session.get_inputs()}
        outputs = [o.name for o in session.get_outputs()]
        if tuple(inputs) != expected or any(inputs[n] != _EXPECTED_TYPES[n] for n in expected):
            raise BundleError(f"{path}: graph inputs are {inputs}; expected "
                              f"{ {n: _EXPECTED_TYPES[n] for n in expected} }")
        if sorted(outputs) != sorted(OUTPUTS):
            raise BundleError(f"{path}: graph outputs are {outputs}; expected {list(OUTPUTS)}")
        return cls(model, session, bundle)

    def score(self, users: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(score, rating, rank)`` float32 [len(users), n_items] for user indices ``users``."""
        feeds = {"user": users}
        if "history_items" in ALL_ITEMS_INPUTS[self.model]:
            feeds["history_items"] = self.bundle.history_items[users]
            feeds["history_ratings"] = self.bundle.history_ratings[users]
        score, rating, rank = self.session.run(list(OUTPUTS), feeds)
        return score, rating, rank
