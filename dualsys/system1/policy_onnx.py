"""The `fp32-ort` inference form: a chunk's whole flow integration run by ONNX Runtime, in fp32.

The graph is exported from the policy's own torch module (`dualsys.system1.policy.Integrator`:
the K Euler steps of the `FlowPolicy` with real-time chunking; torch's ONNX exporter traces its
forward with the checkpoint's weights), so the model's maths exists once, in
`dualsys.system1.policy`; ONNX Runtime only runs it. Same weights, same fp32 arithmetic: the
chunk differs from eager torch by float rounding only (a different summation order inside the
matrix products). What it removes is torch's per-operator dispatch (about 2,000 torch operator
calls a chunk at batch 1), torch's slower small-matrix and GELU kernels, and the work that does
not depend on the input (the flow-time embeddings of the K fixed flow times are folded into
constants): benchmarks/results/policy.md has the profile and the numbers.

The export is checked once at build time against the module on fixed inputs; a graph that does
not reproduce it is a `PolicyError`, never a silently different policy.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
import torch

from dualsys.system1.contract import PolicyError

#: the exported graph must reproduce the eager module's output to this (normalised units)
EXPORT_TOLERANCE = 1e-4


class OnnxModule:
    """A torch module's forward, exported to ONNX and run by ONNX Runtime on `threads` threads.

    Called like the module with fp32 tensors of the shapes of `example` (the trace's inputs);
    returns its (single) output as an fp32 torch tensor.
    """

    def __init__(
        self, module: torch.nn.Module, example: tuple[torch.Tensor, ...], threads: int = 1
    ) -> None:
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise PolicyError(
                f"precision 'fp32-ort' needs onnxruntime ({exc}); bin/setup installs it"
            ) from None
        module = module.eval()
        self.names = [f"in{i}" for i in range(len(example))]
        buf = io.BytesIO()
        with warnings.catch_warnings(), torch.no_grad():
            # the TorchScript-based exporter (dynamo=False) is deprecated in favour of the
            # torch.export one, but needs no onnxscript and traces this module in ~0.5 s;
            # torch is pinned (pyproject.toml)
            warnings.simplefilter("ignore")
            torch.onnx.export(
                module, example, buf, dynamo=False, input_names=self.names,
                output_names=["out"], opset_version=17,
            )  # fmt: skip
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(
            buf.getvalue(), opts, providers=["CPUExecutionProvider"]
        )
        with torch.no_grad():
            want = module(*example).numpy()
        err = float(np.abs(self(*example).numpy() - want).max())
        if not err <= EXPORT_TOLERANCE:
            raise PolicyError(
                f"precision 'fp32-ort': the exported graph differs from the module by {err:.2e} "
                f"(tolerance {EXPORT_TOLERANCE:g})"
            )

    def __call__(self, *inputs: torch.Tensor) -> torch.Tensor:
        """The module's output for these inputs (fp32, the example's shapes)."""
        feeds = {
            n: np.ascontiguousarray(a.numpy(), np.float32)
            for n, a in zip(self.names, inputs, strict=True)
        }
        return torch.from_numpy(self.session.run(None, feeds)[0])
