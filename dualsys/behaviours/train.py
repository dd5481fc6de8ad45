"""Joint training of System 2's fusion head and System 1's flow-matching policy.

One training sample is one action step k of one episode:

- System 2 input: the instruction's MiniLM embedding (frozen, cached), the MobileNetV2
  features of the newest camera frame at step k, or with probability 1/2 one or two frames
  older (the latent System 1 uses is up to ~0.25 s old), and the state features at that
  frame's time; the fusion head turns them into the latent (gradients flow into it).
  With the spatial pathway (`spatial_k` > 0) the fusion head also sees that frame
  downsampled (`pixels.npz`, see `dualsys.behaviours.features.build_pixel_cache`).
- Instruction augmentation, so phrasings never seen in training land where the demonstrated
  ones do: with probability `text_swap` the episode's phrasing is replaced by another
  training phrasing of its behaviour (also ones no demonstration was recorded with,
  `FeatureSet.add_phrasings`), then with probability `text_mix` the embedding is a random
  blend of two phrasings of the same behaviour, then Gaussian noise of expected norm
  `text_noise` is added and the vector is re-normalised to unit length (MiniLM embeddings
  are unit vectors). With `text_side` the drawn phrasing's side feature (left/right,
  `dualsys.system2.text.TextEncoder.embed_sided`) follows, unblended and without noise.
- System 1 input: the latent, the normalised state (q, dq) at step k, with a little noise.
  State normalisation (System 1's and System 2's) is `dualsys.normalise.StateNorm`, the one
  inference uses.
- Target: the expert's next H commanded positions (controlled joints), normalised by the
  joint limits (`dualsys.system1.policy.PolicyNorm`, written into the checkpoint and used by
  `ChunkSampler`), padded with the last action at episode end.

- Auxiliary target (training only, `aux_objects` > 0): from the spatial keypoints and the
  state features of the frame a small head predicts the scene objects' (x, y) positions
  (ground truth from the simulation, `objects.npz`; normalised by the data's mean and
  spread). Every frame of every behaviour shows the objects, so the keypoint net learns
  where they are from all demonstrations, not only the touch episodes. The head is not
  part of the shipped fusion checkpoint; run time sees only the image.
- Auxiliary behaviour target (training only, `aux_behaviour` > 0): a linear head reads the
  instructed behaviour back from the latent (cross-entropy), so the latent carries the
  instruction rather than a guess from the robot's pose (why: robots/gr1/TRAINING.md).
  Not part of the shipped checkpoint.

- Prefix conditioning (training-time action conditioning for real-time chunking,
  `prefix_max` > 0): each sample gives the first d ~ U{0..prefix_max} target actions as clean
  tokens at flow time 1 (what real-time chunking freezes at run time) and is scored only on
  the others, so the policy learns to continue the actions already committed. With
  `prefix_offset` > 0 the given prefix is shifted by a random constant per-joint offset while
  the scored actions stay the expert's, so the policy also learns to bring a prefix that lies
  off the demonstration (its own undershoot) back instead of continuing it.

Loss: conditional flow matching with the linear path x_tau = (1 - tau) noise + tau x1 and
velocity target x1 - noise, the path `ChunkSampler.sample` integrates with Euler steps,
plus `aux_objects` times the auxiliary mean squared error and `aux_behaviour` times the
behaviour cross-entropy.
Checkpoints: `policy.safetensors` + `policy.json` (dualsys.system1.policy format: with the
normalisation, the action rate, the robot's run-time settings and the sampling noise scale of
the robot's configured checkpoint, so the new weights sample as the validated ones do),
`fusion.safetensors` (dualsys.system2.fusion format) hold the exponential moving average of
the weights (decay `TrainConfig.ema`, warmed up as (1 + step) / (10 + step)), the weights
that are shipped and evaluated; `train_state.safetensors` (AdamW moments and the raw
weights) + `train_state.json` (step, losses, seeds) for resuming, `loss.png`.
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F  # noqa: N812

from dualsys.behaviours.features import FeatureSet
from dualsys.behaviours.recipe import TrainConfig
from dualsys.config import RobotConfig
from dualsys.system1.contract import PolicyNorm, PolicySpec, runtime_settings
from dualsys.system1.policy import FlowPolicy, flow_loss, save_checkpoint
from dualsys.system2.fusion import DEFAULT_WIDTH, FusionHead, save_fusion
from dualsys.tasks import task_pack


class Trainer:
    """Holds models, optimiser, data and the loop; `run()` trains to `steps`, resumably."""

    def __init__(self, cfg: RobotConfig, features: FeatureSet, out: Path, tc: TrainConfig):
        torch.set_num_threads(tc.threads)
        self.cfg, self.fs, self.out, self.tc = cfg, features, Path(out), tc
        self.out.mkdir(parents=True, exist_ok=True)
        base = PolicySpec.for_robot(cfg)
        self.spec = PolicySpec(
            **{
                **asdict(base),
                "width": tc.width or base.width,
                "layers": tc.layers or base.layers,
                "latent_tokens": tc.latent_tokens,
                "prefix_conditioning": tc.prefix_max > 0,
                "noise_scale": tc.noise_scale,
            }
        )
        if tc.spatial_k > 0 and features.pixels is None:
            raise ValueError(
                "spatial_k > 0 needs the pixel cache (pixels.npz) of every dataset; "
                "build it with dualsys.behaviours.features.build_pixel_cache"
            )
        if tc.aux_objects > 0 and (tc.spatial_k <= 0 or features.objects is None):
            raise ValueError(
                "aux_objects > 0 needs the spatial pathway (spatial_k > 0) and the object "
                "cache (objects.npz) of every dataset; build it with "
                "dualsys.behaviours.features.build_object_cache"
            )
        self._text_groups()
        torch.manual_seed(tc.seed)
        self.norm = PolicyNorm.for_robot(cfg)
        self.policy = FlowPolicy(self.spec, self.norm)
        n = cfg.n_joints
        if tc.text_side and self.fs.text_side is None:
            raise ValueError("text_side needs the phrasings' side features: call "
                             "FeatureSet.add_side_features first")  # fmt: skip
        self.fusion = FusionHead(
            self.fs.text_emb.shape[1], self.fs.vision.shape[1], 2 * n, cfg.system2.latent_dim,
            DEFAULT_WIDTH, tc.spatial_k, text_side=int(tc.text_side),
        ).seeded_init(tc.seed + 1)  # fmt: skip
        self.aux = self._aux_head(2 * n)
        self.beh_names = sorted(set(self.fs.behaviours))
        self.ep_label = torch.tensor([self.beh_names.index(b) for b in self.fs.behaviours])
        self.beh_head = None
        if tc.aux_behaviour > 0:
            torch.manual_seed(tc.seed + 3)
            self.beh_head = torch.nn.Linear(cfg.system2.latent_dim, len(self.beh_names))
        self.beh_loss = torch.zeros(())
        self.opt = torch.optim.AdamW(self._trained(), lr=tc.lr, weight_decay=tc.weight_decay)
        self.step = 0
        self.losses: list[tuple[int, float]] = []
        self.aux_losses: list[tuple[int, float]] = []
        self.gen = torch.Generator().manual_seed(tc.seed)
        self.wall_s = 0.0
        self._resume()
        if self.ema_policy is None:
            self.ema_policy = copy.deepcopy(self.policy).eval()
            self.ema_fusion = copy.deepcopy(self.fusion).eval()
        for p in (*self.ema_policy.parameters(), *self.ema_fusion.parameters()):
            p.requires_grad_(False)

    def _aux_head(self, state_dim: int) -> torch.nn.Module | None:
        """The auxiliary object-position head (None when off); sets the target scaling."""
        if self.tc.aux_objects <= 0:
            return None
        xy = self.fs.objects[..., :2].flatten(1)
        self.obj_mean, self.obj_std = xy.mean(0), xy.std(0).clamp_min(1e-3)
        torch.manual_seed(self.tc.seed + 2)
        k2 = 2 * self.tc.spatial_k
        return torch.nn.Sequential(
            torch.nn.Linear(k2 + state_dim, 128), torch.nn.GELU(), torch.nn.Linear(128, xy.shape[1])
        )

    def _trained(self) -> list[torch.Tensor]:
        """Every parameter the optimiser updates (policy, fusion head, auxiliary head)."""
        return [p for _, model in self._models() for p in model.parameters()]

    def _params(self) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """(trained parameters, their running averages), in matching order."""
        raw = [*self.policy.parameters(), *self.fusion.parameters()]
        ema = [*self.ema_policy.parameters(), *self.ema_fusion.parameters()]
        return raw, ema

    @torch.no_grad()
    def update_ema(self) -> None:
        """Move the weight average towards the current weights."""
        raw, ema = self._params()
        if self.tc.ema <= 0:
            torch._foreach_copy_(ema, raw)
            return
        decay = min(self.tc.ema, (1 + self.step) / (10 + self.step))
        torch._foreach_lerp_(ema, raw, 1.0 - decay)

    # ------------------------------------------------------------------ data
    def _text_groups(self) -> None:
        """Per phrasing: the phrasings of the same behaviour (padded by repetition)."""
        beh = self.fs.behaviour_of_text()
        groups = [[j for j, b in enumerate(beh) if b == beh[i]] for i in range(len(beh))]
        width = max(len(g) for g in groups)
        self.text_group = torch.tensor([(g * width)[:width] for g in groups])
        self.text_group_n = torch.tensor([len(g) for g in groups])

    def texts(self, ids: torch.Tensor) -> torch.Tensor:
        """Augmented instruction embeddings for phrasing ids (see the module docstring)."""
        emb = self.fs.text_emb
        n = len(ids)
        if self.tc.text_swap > 0:
            other_ids = self._other_phrasing(ids)
            swap = torch.rand(n, generator=self.gen) < self.tc.text_swap
            ids = torch.where(swap, other_ids, ids)
        e = emb[ids]
        if self.tc.text_mix > 0:
            other = emb[self._other_phrasing(ids)]
            lam = torch.rand(n, 1, generator=self.gen)
            mix = (torch.rand(n, 1, generator=self.gen) < self.tc.text_mix).float()
            e = e + mix * (1 - lam) * (other - e)
        if self.tc.text_noise > 0:
            scale = self.tc.text_noise / np.sqrt(e.shape[1])
            e = e + torch.randn(e.shape, generator=self.gen) * scale
        e = e / e.norm(dim=1, keepdim=True).clamp_min(1e-6)
        if self.tc.text_side:  # the side feature of the phrasing drawn (not blended, no noise)
            e = torch.cat([e, self.fs.text_side[ids]], dim=1)
        return e

    def _other_phrasing(self, ids: torch.Tensor) -> torch.Tensor:
        """A random phrasing of the same behaviour (possibly the same one) per phrasing id."""
        pick = torch.randint(0, 1 << 30, (len(ids),), generator=self.gen) % self.text_group_n[ids]
        return self.text_group[ids, pick]

    def _state(self, q: torch.Tensor, dq: torch.Tensor) -> torch.Tensor:
        """The state normalisation of inference (`ChunkSampler.state_vector`, `StateFeatures`)."""
        return torch.from_numpy(self.norm.state(q.numpy(), dq.numpy()))

    def batch(self, rows: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        """(text, vision, fusion state, policy state, normalised action chunk, pixels or
        None, normalised object (x, y) at the frame or None) for rows."""
        fs, H = self.fs, self.spec.horizon
        ep = fs.ep[rows]
        start = fs.ep_start[ep]
        last = start + fs.ep_len[ep] - 1
        lag = torch.randint(0, 3, (len(rows),), generator=self.gen) * (
            torch.rand(len(rows), generator=self.gen) < 0.5
        )
        img = torch.maximum(fs.img[rows] - lag, fs.img[start])
        per = self.cfg.rates.action_hz // self.cfg.rates.camera_hz
        frame_row = torch.minimum(start + (img - fs.img[start]) * per, rows)
        text = self.texts(fs.ep_text[ep])
        vision = fs.vision[img]
        pixels = fs.pixels[img] if self.fusion.wants_pixels else None
        s2_q = fs.q[frame_row]
        if self.tc.fusion_state_noise > 0:
            s2_q = s2_q + torch.randn(s2_q.shape, generator=self.gen) * self.tc.fusion_state_noise
        s2_state = self._state(s2_q, fs.dq[frame_row])
        q = fs.q[rows] + torch.randn(fs.q[rows].shape, generator=self.gen) * self.tc.state_noise
        policy_state = self._state(q, fs.dq[rows])
        idx = torch.minimum(rows[:, None] + torch.arange(H)[None], last[:, None])
        act = torch.from_numpy(self.norm.actions(fs.act[idx].numpy()))
        obj = None
        if self.aux is not None:
            obj = (fs.objects[frame_row][..., :2].flatten(1) - self.obj_mean) / self.obj_std
        return text, vision, s2_state, policy_state, act, pixels, obj

    def loss(self, rows: torch.Tensor) -> torch.Tensor:
        """Flow-matching loss (+ the weighted auxiliary loss) on a batch of rows."""
        text, vision, s2_state, state, x1, pixels, obj = self.batch(rows)
        latent, kp = self._latent(text, vision, s2_state, pixels)
        loss = flow_loss(
            self.policy, x1, latent, state, self.gen, self.tc.prefix_max, self.tc.prefix_offset
        )
        if self.aux is not None:
            self.aux_loss = F.mse_loss(self._objects_of(kp, s2_state), obj)
            loss = loss + self.tc.aux_objects * self.aux_loss
        if self.beh_head is not None:
            label = self.ep_label[self.fs.ep[rows]]
            self.beh_loss = F.cross_entropy(self.beh_head(latent), label)
            loss = loss + self.tc.aux_behaviour * self.beh_loss
        return loss

    def _latent(self, text, vision, s2_state, pixels) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(latent, spatial keypoints or None) of the fusion head being trained."""
        kp = self.fusion.spatial(pixels) if pixels is not None else None
        return self.fusion(text, vision, s2_state, keypoints=kp), kp

    def _objects_of(self, keypoints: torch.Tensor, s2_state: torch.Tensor) -> torch.Tensor:
        """The auxiliary head's normalised object (x, y) from keypoints and state features."""
        return self.aux(torch.cat([keypoints, s2_state], -1))

    @torch.no_grad()
    def object_error_m(self, rows: torch.Tensor) -> float:
        """Mean distance (m) between the auxiliary head's object (x, y) and the truth."""
        _, _, s2_state, _, _, pixels, obj = self.batch(rows)
        pred = self._objects_of(self.fusion.spatial(pixels), s2_state)
        d = ((pred - obj) * self.obj_std).view(len(rows), -1, 2).norm(dim=-1)
        return float(d.mean())

    @torch.no_grad()
    def behaviour_accuracy(self, rows: torch.Tensor) -> float:
        """Fraction of rows whose behaviour the auxiliary head reads from the (raw) latent."""
        text, vision, s2_state, _, _, pixels, _ = self.batch(rows)
        latent, _ = self._latent(text, vision, s2_state, pixels)
        label = self.ep_label[self.fs.ep[rows]]
        return float((self.beh_head(latent).argmax(-1) == label).float().mean())

    # ------------------------------------------------------------------ loop
    def lr_at(self, step: int) -> float:
        """Linear warm-up, then cosine decay to 10%."""
        tc = self.tc
        if step < tc.warmup:
            return tc.lr * (step + 1) / tc.warmup
        p = (step - tc.warmup) / max(1, tc.steps - tc.warmup)
        return tc.lr * (0.1 + 0.9 * 0.5 * (1 + np.cos(np.pi * min(p, 1.0))))

    def run(self, progress: Callable[[int, float], None] | None = None) -> None:
        """Train until tc.steps (from the resumed step), checkpointing every save_every."""
        n = len(self.fs)
        self.policy.train()
        self.fusion.train()
        t_last = t_first = time.monotonic()
        first, wanted = self.step, self.tc.steps
        while self.step < self.tc.steps:
            if self.tc.max_minutes > 0 and self.step - first >= 50 and self.step % 50 == 0:
                self._fit_budget(first, t_first, wanted)
            for g in self.opt.param_groups:
                g["lr"] = self.lr_at(self.step)
            rows = self.draw_rows(n)
            loss = self.loss(rows)
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self._trained(), 1.0)
            self.opt.step()
            self.step += 1
            self.update_ema()
            self.losses.append((self.step, loss.item()))
            if self.aux is not None:
                self.aux_losses.append((self.step, self.aux_loss.item()))
            now = time.monotonic()
            self.wall_s += now - t_last
            t_last = now
            if progress:
                progress(self.step, self.losses[-1][1])
            if self.step % self.tc.save_every == 0 or self.step == self.tc.steps:
                self.save()

    def draw_rows(self, n: int) -> torch.Tensor:
        """A batch of sample rows: uniform over the episodes of the expert's current version,
        with `oversample` behaviours weighted up."""
        if not hasattr(self, "_row_weights"):
            self._row_weights = self._weights()
        if self._row_weights is None:
            return torch.randint(0, n, (self.tc.batch,), generator=self.gen)
        return torch.multinomial(self._row_weights, self.tc.batch, True, generator=self.gen)

    def _weights(self) -> torch.Tensor | None:
        """Per-row draw weights, or None for uniform (every episode current, no oversampling)."""
        current = self.fs.current_episodes(task_pack(self.cfg).expert_version)
        if not current.any():
            raise ValueError("no episode was demonstrated with the current expert version")
        names = {b.strip() for b in self.tc.oversample.split(",") if b.strip()}
        if self.tc.oversample_factor == 1.0:
            names = set()
        unknown = names - set(self.fs.behaviours)
        if unknown:
            raise ValueError(f"oversample: no episodes of {sorted(unknown)} in the data")
        if not names and bool(current.all()):
            return None
        ep_w = torch.tensor(
            [self.tc.oversample_factor if b in names else 1.0 for b in self.fs.behaviours]
        )
        return (ep_w * current)[self.fs.ep]

    def _fit_budget(self, first: int, t_first: float, wanted: int) -> None:
        """Lower tc.steps to what fits in max_minutes at the measured step rate (the cosine
        schedule follows the new end)."""
        rate = (self.step - first) / max(time.monotonic() - t_first, 1e-6)
        left_s = self.tc.max_minutes * 60 - self.wall_s
        self.tc.steps = max(self.step + 1, min(wanted, self.step + int(left_s * rate)))

    # ------------------------------------------------------------------ checkpoints
    def save(self) -> None:
        """Write the policy, fusion, optimiser state, history and loss curve."""
        from safetensors.torch import save_file

        save_checkpoint(
            self.ema_policy, self.out / "policy.safetensors", runtime_settings(self.cfg)
        )
        save_fusion(self.ema_fusion, self.out / "fusion.safetensors", self.norm.state)
        moments = {
            f"raw/{name}.{k}": v.detach().contiguous()
            for name, model in self._models()
            for k, v in model.state_dict().items()
        }
        names = {
            id(p): f"{m}.{k}" for m, model in self._models() for k, p in model.named_parameters()
        }
        for group in self.opt.param_groups:
            for p in group["params"]:
                st = self.opt.state.get(p, {})
                for key in ("exp_avg", "exp_avg_sq"):
                    if key in st:
                        moments[f"{names[id(p)]}/{key}"] = st[key].contiguous()
                if "step" in st:
                    moments[f"{names[id(p)]}/step"] = torch.as_tensor(st["step"]).reshape(1)
        save_file(moments, str(self.out / "train_state.safetensors"))
        state = {
            "step": self.step,
            "wall_s": self.wall_s,
            "train": asdict(self.tc),
            "gen_state": self.gen.get_state().tolist(),
            "losses": self.losses,
            "aux_losses": self.aux_losses,
        }
        (self.out / "train_state.json").write_text(json.dumps(state))
        plot_losses(self.losses, self.out / "loss.png")

    def _models(self) -> list[tuple[str, torch.nn.Module]]:
        """(name, module) of every trained module, the names used in train_state."""
        out = [("policy", self.policy), ("fusion", self.fusion)]
        out += [("aux", self.aux)] if self.aux is not None else []
        return out + ([("beh", self.beh_head)] if self.beh_head is not None else [])

    def _resume(self) -> None:
        """Continue from train_state.* in the output directory, when present."""
        from safetensors.torch import load_file

        from dualsys.system1.policy import load_checkpoint
        from dualsys.system2.fusion import load_fusion

        self.ema_policy = self.ema_fusion = None
        js = self.out / "train_state.json"
        if not js.exists():
            return
        state = json.loads(js.read_text())
        self.policy = load_checkpoint(self.out / "policy.safetensors", self.spec).train()
        d = self.fusion.dims
        self.fusion = load_fusion(
            self.out / "fusion.safetensors", d["text_dim"], d["vision_dim"], d["state_dim"],
            d["latent_dim"],
        ).train()  # fmt: skip
        moments = load_file(str(self.out / "train_state.safetensors"))
        if any(k.startswith("raw/") for k in moments):  # saved weights are the average
            self.ema_policy = copy.deepcopy(self.policy).eval()
            self.ema_fusion = copy.deepcopy(self.fusion).eval()
            for name, model in self._models():
                prefix = f"raw/{name}."
                sd = {k[len(prefix) :]: v for k, v in moments.items() if k.startswith(prefix)}
                if sd or name not in ("aux", "beh"):  # a run started without that head
                    model.load_state_dict(sd)
        self.opt = torch.optim.AdamW(
            self._trained(), lr=self.tc.lr, weight_decay=self.tc.weight_decay
        )
        named = [
            (f"{m}.{k}", p) for m, model in self._models() for k, p in model.named_parameters()
        ]
        for name, p in named:
            if f"{name}/exp_avg" in moments:
                self.opt.state[p] = {
                    "exp_avg": moments[f"{name}/exp_avg"],
                    "exp_avg_sq": moments[f"{name}/exp_avg_sq"],
                    "step": moments[f"{name}/step"][0].clone(),
                }
        self.step = int(state["step"])
        self.wall_s = float(state.get("wall_s", 0.0))
        self.losses = [tuple(x) for x in state["losses"]]
        self.aux_losses = [tuple(x) for x in state.get("aux_losses", [])]
        self.gen.set_state(torch.tensor(state["gen_state"], dtype=torch.uint8))


def restart_from_average(out: Path, seed: int) -> None:
    """Make the checkpoint in `out` begin a fine-tune at its step: its saved (averaged)
    weights become the weights trained on, the optimiser's moments, the raw weights and the
    auxiliary heads are dropped, and the random generator restarts from `seed`. The step and
    the loss history stay, so the learning rate follows the new stage's schedule from there."""
    from safetensors.torch import save_file

    js = out / "train_state.json"
    state = json.loads(js.read_text())
    state["gen_state"] = torch.Generator().manual_seed(seed).get_state().tolist()
    save_file({"restarted": torch.zeros(1)}, str(out / "train_state.safetensors"))
    js.write_text(json.dumps(state))


def plot_losses(losses: list[tuple[int, float]], path: Path) -> None:
    """Loss curve (raw and smoothed, log scale) as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not losses:
        return
    steps = np.array([s for s, _ in losses])
    vals = np.array([v for _, v in losses])
    k = max(1, len(vals) // 50)
    smooth = np.convolve(vals, np.ones(k) / k, mode="valid")
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    ax.plot(steps, vals, alpha=0.3, lw=0.8, label="batch loss")
    ax.plot(steps[k - 1 :], smooth, lw=1.5, label=f"mean of {k}")
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("flow-matching loss")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
