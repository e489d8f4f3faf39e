"""Images in the ``flows`` command: ``fit``, ``sample`` and ``eval`` with image flows.

``flows fit`` turns to images when DATA is the built-in ``digits`` (scikit-learn's 8x8 digits,
17 levels: ``pip install 'flows-image[digits]'``), an image file or a folder of them (8-bit,
256 levels), a ``.npy`` array of rank 3 or more, or when ``--flow`` names an image flow
(``glow``, ``realnvp-image``, from flows-image). The images are integers on ``K`` levels,
``(N, C, H, W)``: 256 levels for image files and ``uint8`` arrays, else the largest value plus
one. Training minimizes bits per dimension under uniform dequantization,
``x = (k + u) / K``; the checkpoint records the image shape and ``K`` in its ``extra``
(``kind: images``), and a PNG shows a grid of data images beside a grid of samples.

``flows sample`` on such a checkpoint writes integer images ``(N, C, H, W)`` to a ``.npy``
file; ``flows eval`` reports bits per dimension (one uniform dequantization draw per image,
seeded by ``--seed``).

Every refusal (a missing extra, an array of the wrong rank, sizes the flow's scales cannot
halve, a tabular flow for images) is one ``flows: error:`` line, before any training.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

from flows.cli.arguments import CLIError
from flows.cli.outputs import PLOT_SOFTWARE, OutputPlan, write_table
from flows.core.files import atomic_file, atomic_path

__all__ = [
    "IMAGE_SETS",
    "image_checkpoint",
    "run_eval_images",
    "run_fit_images",
    "run_sample_images",
    "wants_images",
]

#: Built-in image sets and what they are.
IMAGE_SETS = {"digits": "scikit-learn's 1797 8x8 handwritten digits, 17 levels"}
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
#: With no --epochs, aim for about this many optimizer steps (at least 2 epochs).
TARGET_STEPS = 500
GRID = 64  # images per side of the PNG
CHUNK = 1024
KIND = "images"


# Which path a command takes


def _image_preset(name: str | None, load: bool = True) -> bool:
    """Whether ``name`` is a registered image flow (one whose events are images).

    Without ``load``, judged from the registry alone (provided by flows-image), so that a
    tabular run does not import torch before its own checks.
    """
    if name is None:
        return False
    from flows.core.plugins import RegistryError, preset_spec

    try:
        provided = preset_spec(name)
        if not load:
            return provided.distribution == "flows-image"
        constructor = provided.spec.load()
    except (RegistryError, ImportError, AttributeError):
        return False  # the tabular path reports an unknown or broken name in its own words
    return getattr(constructor, "event_rank", 1) == 3


def _npy_rank(path: Path) -> int | None:
    try:
        return int(np.load(path, mmap_mode="r", allow_pickle=False).ndim)
    except Exception:  # not readable as an array: the tabular reader says why
        return None


def wants_images(data: str, flow: str | None) -> bool:
    """Whether ``flows fit DATA --flow FLOW`` is about images."""
    if data in IMAGE_SETS:
        return True
    from flows.cli.datasets import TOY_SETS

    if data in TOY_SETS:
        # A built-in set's name means the built-in set, as for `flows eval` (load_data), even
        # beside a folder of that name (an output folder `moons/`): only --flow decides.
        return _image_preset(flow, load=False)
    path = Path(data)
    suffix = path.suffix.lower()
    if suffix in IMAGE_SUFFIXES or path.is_dir():
        return True
    if suffix == ".npy" and path.is_file() and (_npy_rank(path) or 0) >= 3:
        return True
    return _image_preset(flow, load=False)


def image_checkpoint(path: str) -> bool:
    """Whether the file at ``path`` is a checkpoint ``flows fit`` wrote for images.

    Reads the file's metadata only (as plain data, ``weights_only``); anything unreadable is
    left to the checkpoint loader, which says what is wrong with it.
    """
    import io

    import torch

    try:
        outer = torch.load(path, map_location="cpu", weights_only=True)
        inner = torch.load(io.BytesIO(outer["payload"]), map_location="cpu", weights_only=True)
        return bool(inner["extra"].get("kind") == KIND)
    except Exception:
        return False


# Reading images


def _levels_of(values: np.ndarray, source: str, eight_bit: bool) -> tuple[np.ndarray, int]:
    """The images as int64 and their number of levels, after checking they are levels."""
    if values.dtype == np.bool_:
        return values.astype(np.int64), 2
    if not np.issubdtype(values.dtype, np.number) or np.issubdtype(
        values.dtype, np.complexfloating
    ):
        raise CLIError(f"{source}: images must hold numbers, got an array of {values.dtype}")
    if not np.isfinite(values).all():
        raise CLIError(f"{source}: the images hold NaN or inf")
    if (values < 0).any() or (values != np.round(values)).any():
        raise CLIError(
            f"{source}: image flows model integer levels 0, 1, ..., K-1 (e.g. 8-bit 0..255); "
            "these images hold negative or fractional values"
        )
    top = int(values.max())
    levels = 256 if eight_bit or values.dtype == np.uint8 else top + 1
    return values.astype(np.int64), max(levels, 2)


def _read_picture(path: Path) -> np.ndarray:
    try:
        from PIL import Image
    except ImportError:
        raise CLIError("reading image files needs Pillow: pip install 'flows-cli[plot]'") from None
    try:
        with Image.open(path) as picture:
            if picture.mode not in ("L", "RGB"):
                picture = picture.convert("RGB")
            array = np.asarray(picture)
    except (
        OSError,
        ValueError,
        SyntaxError,
        Image.DecompressionBombError,
        Image.DecompressionBombWarning,
    ) as error:
        # PIL refuses a header claiming a huge size (a decompression bomb, or a warning turned
        # into an error) with exceptions that are not OSErrors; some decoders raise ValueError
        # or SyntaxError on corrupt files. Each is one error line naming the file.
        raise CLIError(f"{str(path)!r} is not a readable image ({error})") from None
    return array[None] if array.ndim == 2 else array.transpose(2, 0, 1)


def _image_files(folder: Path) -> list[Path]:
    """The image files of a folder, in the order they are read."""
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def _input_files(data: str | None) -> str | list[Path] | None:
    """What DATA reads, for the output plan: the file, or each image file of a folder, so
    that no output (not even with --force) replaces one of the images it was fitted on."""
    if data is not None and Path(data).is_dir():
        return _image_files(Path(data))
    return data


def load_images(data: str, key: str | None = None) -> tuple[np.ndarray, int, str]:
    """The images of DATA as ``(N, C, H, W)`` int64, their levels, and where they came from."""
    if data == "digits":
        try:
            from flows.image.data import load_digits
        except ImportError:
            raise CLIError("image flows need flows-image: pip install flows-image") from None
        try:
            digits, levels = load_digits()
        except ImportError as error:
            raise CLIError(str(error)) from None
        return digits.numpy(), levels, "digits"
    path = Path(data)
    source = str(path)
    if not path.exists():
        from flows.cli.datasets import TOY_SETS

        if data in TOY_SETS:
            raise CLIError(
                f"{data!r} is a set of points, not images; image flows take the built-in "
                "'digits', an image file, a folder of them or a .npy array (N, C, H, W)"
            )
        raise CLIError(f"no such file or folder {source!r}")
    if path.is_dir():
        files = _image_files(path)
        if not files:
            raise CLIError(f"{source!r} holds no image files ({', '.join(IMAGE_SUFFIXES)})")
        pictures = [_read_picture(p) for p in files]
        for p, picture in zip(files, pictures, strict=True):
            if picture.shape != pictures[0].shape:
                raise CLIError(
                    f"{source}: {p.name} has shape (C, H, W) = {picture.shape}, "
                    f"{files[0].name} {pictures[0].shape}; a flow needs images of one shape"
                )
        images, levels = _levels_of(np.stack(pictures), source, eight_bit=True)
        return images, levels, source
    suffix = path.suffix.lower()
    if suffix in IMAGE_SUFFIXES:
        images, levels = _levels_of(_read_picture(path)[None], source, eight_bit=True)
        return images, levels, source
    if suffix != ".npy":
        raise CLIError(
            f"{source}: images come as an image file, a folder of them, a .npy array of shape "
            "(N, C, H, W), or the built-in 'digits'"
        )
    try:
        values = np.load(path, allow_pickle=False)
    except Exception as error:
        raise CLIError(f"{source} is not a readable .npy array ({error})") from None
    if values.ndim != 4:
        hint = " (for grey images of shape (N, H, W), save x[:, None])" if values.ndim == 3 else ""
        raise CLIError(
            f"{source}: an array of shape {values.shape} is not a batch of images; image flows "
            f"need an array of shape (N, C, H, W){hint}"
        )
    images, levels = _levels_of(values, source, eight_bit=False)
    return images, levels, source


# fit


def _arguments(args: argparse.Namespace, name: str) -> dict[str, Any]:
    """The preset's keyword arguments from the command's options."""
    arguments: dict[str, Any] = {}
    if args.transforms is not None:
        arguments["depth"] = args.transforms
    if args.hidden is not None:
        if len(args.hidden) != 1:
            raise CLIError(
                f"--hidden: flow {name!r} has convolutional networks of one width; give one "
                f"number (e.g. --hidden 64), got {','.join(map(str, args.hidden))}"
            )
        arguments["hidden_channels"] = args.hidden[0]
    if args.bins is not None:
        raise CLIError(f"flow {name!r} does not take --bins (it has no splines)")
    for key, value in args.flow_arg:
        if key in ("shape", "context"):
            raise CLIError(f"--flow-arg {key}: the image shape is set by the data")
        arguments[key] = value
    return arguments


def _bits(flow: Any, images: Any, levels: int, seed: int) -> Any:
    """Bits per dimension of each image, under one seeded uniform dequantization draw."""
    import torch

    from flows.image.dequantization import bits_per_dim

    generator = torch.Generator(device=images.device).manual_seed(seed)
    dims = math.prod(images.shape[1:])
    parts = []
    with torch.no_grad():
        for start in range(0, len(images), CHUNK):
            k = images[start : start + CHUNK]
            u = torch.rand(k.shape, generator=generator, device=k.device, dtype=torch.float32)
            log_p = flow().log_prob((k.float() + u) / levels)
            parts.append(bits_per_dim(log_p, dims, levels).double().cpu())
    return torch.cat(parts).numpy()


def run_fit_images(args: argparse.Namespace) -> int:
    from flows.core.plugins import preset_spec

    name = args.flow or "glow"
    provided = preset_spec(name)  # an unknown name: RegistryError suggests close ones
    if not _image_preset(name):
        raise CLIError(
            f"flow {name!r} models rows of numbers, not images; image flows: glow, "
            "realnvp-image (pip install flows-image)"
        )
    if args.columns or args.context_columns:
        raise CLIError("--columns and --context-columns do not apply to images")
    # Options of the tabular fit that an image fit would otherwise silently ignore.
    ignored = [
        option
        for option, given in (
            ("--support", args.support is not None),
            ("--compile", args.compile or args.compile_mode is not None),
            ("--drop-nonfinite", args.drop_nonfinite),
        )
        if given
    ]
    if ignored:
        verb = "does" if len(ignored) == 1 else "do"
        raise CLIError(f"{' and '.join(ignored)} {verb} not apply to images")
    data_file = None if args.data in IMAGE_SETS else args.data
    plan = OutputPlan(force=args.force, inputs={"DATA": _input_files(data_file)})
    out = plan.add("--out", args.out, "checkpoint")
    images, levels, source = load_images(args.data, args.key)
    count = len(images)
    held = round(args.validation * count)
    if count - held < 1 or (args.validation > 0 and held < 1):
        raise CLIError(f"{source}: {count} image(s) are too few to fit a flow")
    plot_path = None
    if not args.no_plot:
        plot_path = plan.add(
            "--plot", args.plot or out.with_suffix(".png"), "plot", default=args.plot is None
        )
    arguments = _arguments(args, name)

    import torch

    from flows.cli.workers import check_device
    from flows.core.checkpoint import save

    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise CLIError("image flows train in one process; run flows fit without torchrun")
    torch.set_num_threads(args.threads)
    device = check_device(args.device)
    torch.manual_seed(args.seed)
    shape = tuple(int(n) for n in images.shape[1:])
    try:
        flow = provided.spec.load()(shape=list(shape), **arguments)
    except (TypeError, ValueError) as error:
        raise CLIError(
            f"{source}: flow {name!r} refused: {' '.join(str(error).split())}"
        ) from None
    flow = flow.to(device)

    per_epoch = math.ceil((count - held) / args.batch_size)
    epochs = args.epochs or max(2, math.ceil(TARGET_STEPS / per_epoch))
    dims = math.prod(shape)
    print(
        f"fitting {name} ({provided.distribution} {provided.version}) to {source}: "
        f"{count} images of shape {shape}, {levels} levels",
        file=sys.stderr,
    )
    result = _train(flow, torch.as_tensor(images, device=device), levels, epochs, args)
    flow.eval()
    # Bits per dimension are an affine map of the NLL of x = (k + u) / K, in nats per image.
    offset, per_nat = math.log2(levels), 1 / (dims * math.log(2))
    train_bpd = result.train_nll * per_nat + offset
    val_bpd = None if result.val_nll is None else result.val_nll * per_nat + offset
    extra = {
        "kind": KIND,
        "data": source,
        "shape": list(shape),
        "levels": levels,
        "train_bpd": train_bpd,
        "val_bpd": val_bpd,
        "steps": result.steps,
    }
    with atomic_path(out) as staged:
        save(flow, staged, extra=extra)
    note = None
    if plot_path is not None:
        with torch.no_grad():
            samples = flow().sample((GRID,))
        note = plot_images(
            images[:GRID],
            _quantized(samples, levels),
            levels,
            f"{name} fitted to {source}",
            plot_path,
        )
    lines = [
        ("flow", name),
        ("train", f"{train_bpd:.4f} bits/dim"),
        ("held-out", "-" if val_bpd is None else f"{val_bpd:.4f} bits/dim"),
        ("steps", f"{result.steps} (best at {result.best_step})"),
        ("time", f"{result.seconds:.1f} s"),
        ("checkpoint", str(out)),
    ]
    if plot_path is not None and note is None:
        lines.append(("plot", str(plot_path)))
    width = max(len(key) for key, _ in lines)
    for key, value in lines:
        print(f"{key.ljust(width)}  {value}")
    if note:
        print(f"flows: note: {note}", file=sys.stderr)
    return 0


def _train(flow: Any, images: Any, levels: int, epochs: int, args: argparse.Namespace) -> Any:
    """flows-core's ``fit`` on the images, uniformly dequantized: its ``FitResult``."""
    import torch

    from flows.cli.fitting import diverged_message
    from flows.core.training import FitDivergedError, fit

    dims = math.prod(images.shape[1:])
    per_nat = 1 / (dims * math.log(2))  # bits/dim = NLL per_nat + log2 K

    def dequantize(k: Any, generator: Any) -> Any:
        u = torch.rand(k.shape, generator=generator, device=k.device, dtype=k.dtype)
        return (k + u) / levels

    bar, callback = None, None
    if sys.stderr.isatty():  # the callback reads every loss: no syncs for nobody to see
        from tqdm import tqdm

        held = round(args.validation * len(images))
        total = epochs * math.ceil((len(images) - held) / args.batch_size)
        bar = tqdm(total=total, file=sys.stderr, unit="step", desc="fit")

        def callback(progress: Any) -> None:
            bar.update(1)
            if progress.step % 20 == 0 or progress.step == 1:
                bits = progress.loss * per_nat + math.log2(levels)
                bar.set_postfix({"bits/dim": f"{bits:.3f}"}, refresh=False)

    try:
        return fit(
            flow,
            images,
            epochs=epochs,
            batch_size=args.batch_size,
            lr=args.lr,
            validation=args.validation,
            patience=args.patience,
            lr_patience=args.lr_patience,
            # The loss is in nats per image: clipping its gradient at clip_grad D ln 2 is
            # clipping the gradient of the bits per dimension at clip_grad.
            clip_grad=args.clip_grad / per_nat,
            callback=callback,
            seed=args.seed,
            dequantize=dequantize,
        )
    except FitDivergedError as error:
        raise CLIError(diverged_message(error, args)) from None
    finally:
        if bar is not None:
            bar.close()


def _quantized(samples: Any, levels: int) -> np.ndarray:
    from flows.image.dequantization import quantize

    if not bool(samples.isfinite().all()):
        raise CLIError(
            "the model drew samples holding NaN or inf: its weights are broken (diverged or "
            "altered); refit it"
        )
    values = quantize(samples, levels).cpu().numpy()
    return values.astype(np.uint8 if levels <= 256 else np.int64)


def _grid(images: np.ndarray, levels: int) -> np.ndarray:
    """Images ``(N, C, H, W)`` tiled into one picture ``(rows H, cols W[, 3])`` in [0, 1]."""
    n, c, h, w = images.shape
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    # Gaps of NaN, which imshow leaves transparent: white lines between the images.
    canvas = np.full((rows * (h + 1) - 1, cols * (w + 1) - 1, c), np.nan)
    for i, image in enumerate(images):
        r, q = divmod(i, cols)
        canvas[r * (h + 1) : r * (h + 1) + h, q * (w + 1) : q * (w + 1) + w] = image.transpose(
            1, 2, 0
        ) / (levels - 1)
    if c == 1:
        return canvas[..., 0]
    return canvas[..., :3] if c >= 3 else np.concatenate([canvas, canvas[..., :1]], -1)


def plot_images(
    data: np.ndarray, samples: np.ndarray, levels: int, title: str, path: Path
) -> str | None:
    """A PNG with a grid of data images on the left and of samples on the right."""
    try:
        import matplotlib
    except ImportError:
        return "matplotlib is not installed, so no plot was drawn (pip install 'flows-cli[plot]')"
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from flows.cli import __version__

    figure, axes = plt.subplots(1, 2, figsize=(10, 5.6))
    for ax, images, label in ((axes[0], data, "data"), (axes[1], samples, "flow samples")):
        ax.imshow(_grid(images, levels), cmap="gray_r", vmin=0, vmax=1, interpolation="nearest")
        ax.set_title(f"{label} ({len(images)} images)")
        ax.axis("off")
    figure.suptitle(title)
    figure.tight_layout()
    try:
        with atomic_file(path) as file:
            figure.savefig(
                file, format="png", dpi=80, metadata={"Software": f"{PLOT_SOFTWARE} {__version__}"}
            )
    finally:
        plt.close(figure)
    return None


# sample and eval


def _load(path: str) -> tuple[Any, dict[str, Any], str]:
    from flows.core.checkpoint import load

    checkpoint = load(path)
    extra = checkpoint.extra
    shape, levels = extra.get("shape"), extra.get("levels")
    if (
        not isinstance(levels, int)
        or levels < 2
        or list(shape or []) != list(checkpoint.arguments.get("shape", []))
    ):
        raise CLIError(f"checkpoint {path!r}: its image shape or levels do not fit its flow")
    checkpoint.flow.eval()
    return checkpoint.flow, extra, checkpoint.preset


def run_sample_images(args: argparse.Namespace) -> int:
    """``flows sample`` of an image checkpoint: integer images into a ``.npy`` file."""
    if args.out is None or Path(args.out).suffix.lower() != ".npy":
        raise CLIError(
            "the model draws images: give --out FILE.npy (an array of shape (N, C, H, W))"
        )
    if args.context is not None:
        raise CLIError("the model is not conditional; --context does not apply")
    import torch

    flow, extra, _ = _load(args.model)
    if args.seed is not None:
        torch.manual_seed(args.seed)
    parts = []
    with torch.no_grad():
        for start in range(0, args.num, CHUNK):
            samples = flow().sample((min(CHUNK, args.num - start),))
            parts.append(_quantized(samples, extra["levels"]))
    with atomic_file(args.out) as file:
        np.save(file, np.concatenate(parts))
    print(
        f"{args.num} images of shape {tuple(extra['shape'])} ({extra['levels']} levels) "
        f"written to {args.out}",
        file=sys.stderr,
    )
    return 0


def run_eval_images(args: argparse.Namespace) -> int:
    """``flows eval`` of an image checkpoint: bits per dimension of DATA's images."""
    import torch

    flow, extra, preset = _load(args.model)
    images, _, source = load_images(args.data, args.key)
    shape, levels = tuple(extra["shape"]), extra["levels"]
    if images.shape[1:] != shape:
        raise CLIError(
            f"{source}: images of shape (C, H, W) = {images.shape[1:]}; the model was fitted "
            f"on {shape}"
        )
    if images.max() >= levels:
        raise CLIError(
            f"{source}: values up to {images.max()}, but the model was fitted on {levels} "
            f"levels (0..{levels - 1})"
        )
    device = next(flow.parameters()).device
    bits = _bits(flow, torch.as_tensor(images, device=device), levels, args.seed)
    if not np.isfinite(bits).all():
        raise CLIError(f"{source}: the model gives some images no finite density")
    summary = (
        f"mean {bits.mean():.4f} bits/dim over {len(bits)} images of {source} under {preset} "
        "(uniform dequantization)"
    )
    if args.out is not None:
        write_table(bits[:, None], ["bits_per_dim"], args.out, sys.stdout)
    if args.per_row:
        write_table(bits[:, None], ["bits_per_dim"], None, sys.stdout)
        print(summary, file=sys.stderr)
    else:
        print(summary)
    return 0
