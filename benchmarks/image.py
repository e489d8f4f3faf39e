"""Glow on the 8x8 digits: our Glow against normflows' Glow, bits per dimension and step time.

Both models are the same architecture at equal depth, width and steps: 2 scales, ``--depth``
steps per scale (actnorm, invertible 1x1 convolution with LU weights, channel-wise affine
coupling whose 3x3 / 1x1 / 3x3 network of ``--width`` channels starts at zero), half the
channels factored out after the first scale. Ours (``flows.image.Glow``) puts a learned prior
on the factored-out latents, computed from the channels kept; normflows' (``GlowBase``) learns a
mean and scale per latent value. Both read ``x = (k + u) / 17`` and are trained by Adam on the
same batches and noise; bits per dimension are computed by the same function
(``flows.image.bits_per_dim``) on the same held-out images and noise draws.

Step time: one training step (forward, backward, Adam) of each model alternately, so that all
see the same machine phases; the median of the per-step ratios (ours / normflows') and its
quartiles are reported, in wall-clock time and in the thread's CPU time (the same work without
the waits of a shared core). With ``--prior diagonal`` (the default) a third model runs beside
the two: the same Glow hand-written in plain torch (``PlainGlow``), the floor of an eager step
of this architecture.

Run: ``nox -s image-bench`` (normflows installed there only), or in an environment with our
packages, scikit-learn and normflows: ``python benchmarks/image.py [--steps 2000]``.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import time
from typing import Any

import torch

from flows.image import Glow, bits_per_dim, load_digits

SHAPE = (1, 8, 8)
SCALES = 2


def normflows_glow(depth: int, width: int) -> torch.nn.Module:
    """normflows' Glow for (1, 8, 8) images, built as its documentation builds one."""
    import normflows as nf

    channels, height, _ = SHAPE
    q0, merges, flows = [], [], []
    for i in range(SCALES):
        steps = [
            nf.flows.GlowBlock(channels * 2 ** (SCALES + 1 - i), width, split_mode="channel")
            for _ in range(depth)
        ]
        flows.append([*steps, nf.flows.Squeeze()])
        if i > 0:
            merges.append(nf.flows.Merge())
            side = height // 2 ** (SCALES - i)
            latent = (channels * 2 ** (SCALES - i), side, side)
        else:
            side = height // 2**SCALES
            latent = (channels * 2 ** (SCALES + 1), side, side)
        q0.append(nf.distributions.GlowBase(latent))
    return nf.MultiscaleFlow(q0, flows, merges, class_cond=False)


class PlainGlow(torch.nn.Module):
    """The floor: the same Glow written as one plain torch function, no flows classes.

    Equal architecture and parameters to ``flows.image.Glow(prior="diagonal")``: per scale a
    squeeze, then ``depth`` steps of actnorm (initialised from the first batch), LU 1x1
    convolution and channel-wise affine coupling (3x3 / 1x1 / 3x3 ReLU network, channels-last,
    last layer zero, tanh-clamped log-scale), half the channels factored out under a learned
    diagonal normal. Only the step time is of interest: how fast the architecture can be
    trained in eager torch with the least work around the convolutions.
    """

    def __init__(self, depth: int, width: int) -> None:
        super().__init__()
        from torch import nn

        self.depth, self.scales = depth, []
        channels, side = SHAPE[0], SHAPE[1]
        for i in range(SCALES):
            channels, side = 4 * channels, side // 2
            split = channels if i == SCALES - 1 else channels // 2
            steps = nn.ModuleList()
            for _ in range(depth):
                step = nn.Module()
                step.loc = nn.Parameter(torch.zeros(channels, 1, 1))
                step.log_scale = nn.Parameter(torch.zeros(channels, 1, 1))
                rotation, _ = torch.linalg.qr(torch.randn(channels, channels))
                p, lower, upper = torch.linalg.lu(rotation)
                step.register_buffer("p", p)
                step.register_buffer("sign", upper.diagonal().sign())
                step.register_buffer("mask", torch.tril(torch.ones(channels, channels), -1))
                step.register_buffer("eye", torch.eye(channels))
                step.lower = nn.Parameter(lower * step.mask)
                step.upper = nn.Parameter(upper.triu(1))
                step.log_diagonal = nn.Parameter(upper.diagonal().abs().log())
                half = channels // 2
                last = nn.Conv2d(width, 2 * (channels - half), 3, padding=1)
                nn.init.zeros_(last.weight)
                nn.init.zeros_(last.bias)
                step.net = nn.Sequential(
                    nn.Conv2d(half, width, 3, padding=1),
                    nn.ReLU(inplace=True),
                    nn.Conv2d(width, width, 1),
                    nn.ReLU(inplace=True),
                    last,
                ).to(memory_format=torch.channels_last)
                steps.append(step)
            prior = nn.ParameterList(
                [nn.Parameter(torch.zeros(split, side, side)) for _ in range(2)]
            )
            self.scales.append((steps, prior, split))
            self.add_module(f"steps{i}", steps)
            self.add_module(f"prior{i}", prior)
            channels -= split
        self.initialized = False

    @staticmethod
    def squeeze(x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        y = x.reshape(b, c, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5)
        return y.reshape(b, h // 2, w // 2, 4 * c).permute(0, 3, 1, 2)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        total = x.new_zeros(())  # the log-determinants that do not depend on the image
        per_image = -0.5 * math.log(2 * math.pi) * math.prod(SHAPE)
        h = x
        for steps, (loc, log_scale), split in self.scales:
            h = self.squeeze(h)
            c, size = h.shape[1], h.shape[2] * h.shape[3]
            for step in steps:
                if not self.initialized:
                    with torch.no_grad():
                        step.loc.copy_(h.mean((0, 2, 3))[:, None, None])
                        std = h.std((0, 2, 3), unbiased=False).clamp_min(1e-6)
                        step.log_scale.copy_(std.log()[:, None, None])
                h = (h - step.loc) * torch.exp(-step.log_scale)
                lower = step.lower * step.mask + step.eye
                upper = step.upper * step.mask.T + step.eye * (step.sign * step.log_diagonal.exp())
                weight = step.p @ lower @ upper
                total = total + (step.log_diagonal.sum() - step.log_scale.sum()) * size
                h = torch.nn.functional.linear(h.permute(0, 2, 3, 1), weight)
                h = h.permute(0, 3, 1, 2)
                kept, moved = h[:, : c // 2], h[:, c // 2 :]
                shift, raw = step.net(kept.contiguous(memory_format=torch.channels_last)).chunk(
                    2, dim=1
                )
                scale = torch.tanh(raw / 2.0) * 2.0
                h = torch.cat((kept, torch.addcmul(shift, moved, scale.exp())), dim=1)
                per_image = per_image + scale.sum((1, 2, 3))
            z = (h[:, :split] - loc) * torch.exp(-log_scale)
            total = total - log_scale.sum()
            per_image = per_image - 0.5 * z.square().sum((1, 2, 3))
            h = h[:, split:]
        self.initialized = True
        return per_image + total


def parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def held_out_bits(log_prob, images: torch.Tensor, levels: int, draws: int) -> float:
    """Mean bits/dim over the images and ``draws`` seeded uniform dequantizations."""
    generator = torch.Generator().manual_seed(12345)
    values = []
    with torch.no_grad():
        for _ in range(draws):
            u = torch.rand(images.shape, generator=generator)
            x = (images.float() + u) / levels
            values.append(bits_per_dim(log_prob(x), 64, levels).double().mean().item())
    return statistics.fmean(values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--depth", type=int, default=4)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--draws", type=int, default=4, help="dequantization draws per image")
    parser.add_argument(
        "--prior",
        default="diagonal",
        choices=["diagonal", "conditional", "standard"],
        help="our latents' prior (diagonal: as normflows' GlowBase, equal parameters)",
    )
    parser.add_argument("--json", help="write the results to this file")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    images, levels = load_digits()
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(0))
    images = images[order]
    held = len(images) // 5
    test, train = images[:held], images[held:]

    torch.manual_seed(args.seed)
    ours = Glow(
        SHAPE, scales=SCALES, depth=args.depth, hidden_channels=args.width, prior=args.prior
    )
    torch.manual_seed(args.seed)
    theirs = normflows_glow(args.depth, args.width)
    models = {
        "flows": (ours, lambda x: ours().log_prob(x)),
        "normflows": (theirs, lambda x: theirs.log_prob(x, None)),
    }
    if args.prior == "diagonal":
        torch.manual_seed(args.seed)
        plain = PlainGlow(args.depth, args.width)
        models["plain torch"] = (plain, plain.log_prob)
    optimizers = {
        name: torch.optim.Adam(model.parameters(), lr=args.lr)
        for name, (model, _) in models.items()
    }
    times: dict[str, list[float]] = {name: [] for name in models}
    cpu: dict[str, list[float]] = {name: [] for name in models}
    generator = torch.Generator().manual_seed(args.seed)
    for step in range(args.steps):
        batch = train[torch.randint(len(train), (args.batch_size,), generator=generator)]
        x = (batch.float() + torch.rand(batch.shape, generator=generator)) / levels
        for name, (model, log_prob) in models.items():
            model.train()
            started, started_cpu = time.perf_counter(), time.thread_time()
            loss = bits_per_dim(log_prob(x), 64, levels).mean()
            optimizers[name].zero_grad(set_to_none=True)
            loss.backward()
            optimizers[name].step()
            times[name].append(time.perf_counter() - started)
            cpu[name].append(time.thread_time() - started_cpu)
        if step % 200 == 0 or step == args.steps - 1:
            print(f"step {step}: last loss {loss.item():.4f} ({name})", flush=True)

    warm = min(10, args.steps // 2)

    def ratio(clock: dict[str, list[float]], name: str) -> dict[str, float]:
        values = [
            a / b for a, b in zip(clock[name][warm:], clock["normflows"][warm:], strict=True)
        ]
        quartiles = statistics.quantiles(values, n=4)
        return {"median": statistics.median(values), "q1": quartiles[0], "q3": quartiles[2]}

    results: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, torch {torch.__version__}, {args.threads} thread(s)",
        "settings": vars(args),
        "held_out_images": held,
        "models": {},
        # Wall clock (what the target is about), and the thread's CPU time: the same work
        # without the time the step waited for a shared core.
        "step_ratio": ratio(times, "flows"),
        "step_ratio_cpu": ratio(cpu, "flows"),
    }
    if "plain torch" in models:
        results["floor_ratio"] = ratio(times, "plain torch")
        results["floor_ratio_cpu"] = ratio(cpu, "plain torch")
    for name, (model, log_prob) in models.items():
        model.eval()
        results["models"][name] = {
            "parameters": parameters(model),
            "held_out_bpd": held_out_bits(log_prob, test, levels, args.draws),
            "step_ms": 1000 * statistics.median(times[name][warm:]),
            "step_cpu_ms": 1000 * statistics.median(cpu[name][warm:]),
        }

    print()
    print("| model | parameters | held-out bits/dim | step (ms, median) | step CPU (ms) |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for name, row in results["models"].items():
        print(
            f"| {name} | {row['parameters']:,} | {row['held_out_bpd']:.4f} | "
            f"{row['step_ms']:.1f} | {row['step_cpu_ms']:.1f} |"
        )
    print()
    for key, label in [
        ("step_ratio", "flows / normflows, wall"),
        ("step_ratio_cpu", "flows / normflows, CPU"),
        ("floor_ratio", "plain torch / normflows, wall"),
        ("floor_ratio_cpu", "plain torch / normflows, CPU"),
    ]:
        if key in results:
            r = results[key]
            print(
                f"step time ratio {label}: {r['median']:.2f}x "
                f"(quartiles {r['q1']:.2f} to {r['q3']:.2f})"
            )
    if not all(math.isfinite(r["held_out_bpd"]) for r in results["models"].values()):
        raise SystemExit("a model diverged")
    if args.json:
        with open(args.json, "w") as file:
            json.dump(results, file, indent=2)


if __name__ == "__main__":
    main()
