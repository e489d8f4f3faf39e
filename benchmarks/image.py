"""Glow on the 8x8 digits: our Glow against normflows' Glow, bits per dimension and step time.

Both models are the same architecture at equal depth, width and steps: 2 scales, ``--depth``
steps per scale (actnorm, invertible 1x1 convolution with LU weights, channel-wise affine
coupling whose 3x3 / 1x1 / 3x3 network of ``--width`` channels starts at zero), half the
channels factored out after the first scale. Ours (``flows.image.Glow``) puts a learned prior
on the factored-out latents, computed from the channels kept; normflows' (``GlowBase``) learns a
mean and scale per latent value. Both read ``x = (k + u) / 17`` and are trained by Adam on the
same batches and noise; bits per dimension are computed by the same function
(``flows.image.bits_per_dim``) on the same held-out images and noise draws.

Step time: one training step (forward, backward, Adam) of each model alternately, so that both
see the same machine phases; the median of the per-step ratios (ours / normflows') and its
quartiles are reported.

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
    optimizers = {
        name: torch.optim.Adam(model.parameters(), lr=args.lr)
        for name, (model, _) in models.items()
    }
    times: dict[str, list[float]] = {name: [] for name in models}
    generator = torch.Generator().manual_seed(args.seed)
    for step in range(args.steps):
        batch = train[torch.randint(len(train), (args.batch_size,), generator=generator)]
        x = (batch.float() + torch.rand(batch.shape, generator=generator)) / levels
        for name, (model, log_prob) in models.items():
            model.train()
            started = time.perf_counter()
            loss = bits_per_dim(log_prob(x), 64, levels).mean()
            optimizers[name].zero_grad(set_to_none=True)
            loss.backward()
            optimizers[name].step()
            times[name].append(time.perf_counter() - started)
        if step % 200 == 0 or step == args.steps - 1:
            print(f"step {step}: last loss {loss.item():.4f} (normflows)", flush=True)

    warm = min(10, args.steps // 2)
    ratios = [a / b for a, b in zip(times["flows"][warm:], times["normflows"][warm:], strict=True)]
    quartiles = statistics.quantiles(ratios, n=4)
    results = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, torch {torch.__version__}, {args.threads} thread(s)",
        "settings": vars(args),
        "held_out_images": held,
        "models": {},
        "step_ratio": {
            "median": statistics.median(ratios),
            "q1": quartiles[0],
            "q3": quartiles[2],
        },
    }
    for name, (model, log_prob) in models.items():
        model.eval()
        results["models"][name] = {
            "parameters": parameters(model),
            "held_out_bpd": held_out_bits(log_prob, test, levels, args.draws),
            "step_ms": 1000 * statistics.median(times[name][warm:]),
        }

    print()
    print("| model | parameters | held-out bits/dim | step (ms, median) |")
    print("| --- | ---: | ---: | ---: |")
    for name, row in results["models"].items():
        print(
            f"| {name} | {row['parameters']:,} | {row['held_out_bpd']:.4f} | "
            f"{row['step_ms']:.1f} |"
        )
    ratio = results["step_ratio"]
    print(
        f"\nstep time ratio flows / normflows: {ratio['median']:.2f}x "
        f"(quartiles {ratio['q1']:.2f} to {ratio['q3']:.2f})"
    )
    if not all(math.isfinite(r["held_out_bpd"]) for r in results["models"].values()):
        raise SystemExit("a model diverged")
    if args.json:
        with open(args.json, "w") as file:
            json.dump(results, file, indent=2)


if __name__ == "__main__":
    main()
