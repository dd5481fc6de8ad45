"""The `fp32-ort` inference form: the policy's velocity field run by ONNX Runtime, in fp32.

The graph is exported from the loaded `FlowPolicy` module itself (torch's ONNX exporter traces
its forward with the checkpoint's weights), so the model's maths exists once, in
`dualsys.system1.policy`; ONNX Runtime only runs it. Same weights, same fp32 arithmetic: the
velocity differs from eager torch by float rounding only (a different summation order inside
the matrix products). What it removes is torch's per-operator dispatch overhead (about 80
small operators a network pass at batch 1) and torch's slower small-matrix and GELU kernels:
benchmarks/results/policy.md has the profile and the numbers.

The export is checked once at build time against the module on a fixed input; a graph that
does not reproduce it is a `PolicyError`, never a silently different policy.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
import torch

from dualsys.system1.contract import PolicyError

#: the exported graph must reproduce the eager module's velocity to this (normalised units)
EXPORT_TOLERANCE = 1e-4
_INPUTS = ("x", "tau", "latent", "state", "tau_tokens")


class OnnxVelocity:
    """A `FlowPolicy`'s forward, exported to ONNX and run by ONNX Runtime on `threads` threads.

    Called like the module: (x (1, H, A), tau (1,), latent (1, L), state (1, S), tau_tokens
    (1, H) or None) -> velocity (1, H, A), fp32 torch tensors. Batch size 1 (one chunk).
    """

    def __init__(self, model: torch.nn.Module, threads: int = 1) -> None:
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise PolicyError(
                f"precision 'fp32-ort' needs onnxruntime ({exc}); bin/setup installs it"
            ) from None
        spec = model.spec
        self.horizon = spec.horizon
        gen = torch.Generator().manual_seed(0)
        probe = (
            torch.randn(1, spec.horizon, spec.action_dim, generator=gen),
            torch.full((1,), 0.25),
            torch.randn(1, spec.latent_dim, generator=gen),
            torch.randn(1, spec.state_dim, generator=gen),
            torch.cat([torch.ones(1, 3), torch.full((1, spec.horizon - 3), 0.25)], 1),
        )
        model = model.eval()
        buf = io.BytesIO()
        with warnings.catch_warnings(), torch.no_grad():
            # the TorchScript-based exporter (dynamo=False) is deprecated in favour of the
            # torch.export one, but it is the one that needs no onnxscript; torch is pinned
            warnings.simplefilter("ignore")
            torch.onnx.export(
                model, probe, buf, dynamo=False, input_names=list(_INPUTS),
                output_names=["v"], opset_version=17,
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
            want = model(*probe).numpy()
        got = self(*probe).numpy()
        err = float(np.abs(got - want).max())
        if not err <= EXPORT_TOLERANCE:
            raise PolicyError(
                f"precision 'fp32-ort': the exported graph's velocity differs from the module's "
                f"by {err:.2e} (tolerance {EXPORT_TOLERANCE:g})"
            )

    def __call__(
        self,
        x: torch.Tensor,
        tau: torch.Tensor,
        latent: torch.Tensor,
        state: torch.Tensor,
        tau_tokens: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Velocity field at (x, tau); tau_tokens None = tau for every action token."""
        if tau_tokens is None:
            tau_tokens = tau[:, None].expand(x.shape[0], self.horizon)
        arrays = (x, tau, latent, state, tau_tokens)
        feeds = {
            n: np.ascontiguousarray(a.numpy(), np.float32)
            for n, a in zip(_INPUTS, arrays, strict=True)
        }
        return torch.from_numpy(self.session.run(None, feeds)[0])
