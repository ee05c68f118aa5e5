"""What each ``natlearn`` sub-command does, one small handler each (the parser is in
:mod:`natlearn.cli`); a handler's docstring is its line in ``natlearn --help``. Heavy modules are
imported inside the handlers, so ``natlearn --help`` stays quick."""

from __future__ import annotations

import argparse
import os
import warnings
from pathlib import Path

from natlearn.config import Config, apply_overrides
from natlearn.errors import NatlearnError
from natlearn.export import export_backbone
from natlearn.models import feature_layers
from natlearn.presets import load_preset
from natlearn.training.checkpoint import (
    checkpoint_file,
    checkpoint_paths,
    evaluation_config,
    latest_checkpoint,
    load_checkpoint,
    network_from_state,
)

__all__ = [
    "train_command",
    "demo_command",
    "eval_command",
    "compare_command",
    "neighbors_command",
    "filters_command",
    "evolution_command",
    "report_command",
    "export_command",
    "embed_command",
    "transfer_command",
]


def _train_config(args: argparse.Namespace) -> Config:
    """The config of ``natlearn train``. With --resume and no preset it is the checkpoint's plus
    the key=value changes; with a preset (the same command re-run with --resume) it is the preset
    plus the changes, as for a new run. Either way a change to a RESUME_LOCKED field is refused
    before any work."""
    base, settings = _split_preset(args.settings)
    if args.supervised:
        settings.append("objective=supervised")
    if not args.resume:
        return apply_overrides(base or Config(), settings)
    out = Path(apply_overrides(base or Config(), settings).out)
    with warnings.catch_warnings():  # train() looks again and warns about damaged checkpoints once
        warnings.simplefilter("ignore")
        found = latest_checkpoint(out)
    if found is None:
        raise NatlearnError(
            f"nothing to resume in {out}: no readable checkpoint under {out / 'checkpoints'}; "
            "drop --resume to start a new run"
        )
    saved = found[1]["config"]
    config = apply_overrides(base, settings) if base else Config.from_checkpoint(saved, settings)
    config.check_resumable(saved)
    return config


def _split_preset(settings: list[str]) -> tuple[Config | None, list[str]]:
    """An optional preset name or YAML file first, then key=value settings."""
    if settings and "=" not in settings[0]:
        return load_preset(settings[0]), settings[1:]
    return None, list(settings)


def _eval_settings(args: argparse.Namespace):
    from natlearn.evaluate import EvalSettings

    try:
        ks = tuple(int(k) for k in args.knn.split(",") if k.strip())
    except ValueError:
        ks = (0,)  # not integers: refused below with the same message
    if any(k < 1 for k in ks):
        raise NatlearnError(
            f"--knn {args.knn!r} must be comma-separated positive integers, e.g. 20,200 "
            "('' for no k-NN)"
        )
    if args.probe_epochs < 1:
        raise NatlearnError(f"--probe-epochs {args.probe_epochs} must be >= 1")
    if args.finetune < 0:
        raise NatlearnError(f"--finetune {args.finetune} must be >= 0 (0 = no fine-tuning)")
    return EvalSettings(
        layers=_names(args.layers) or None,
        linear=not args.no_linear,
        knn=ks,
        knn_layers=tuple(_names(args.knn_layers)),
        mlp=not args.no_mlp,
        probe_epochs=args.probe_epochs,
        finetune_epochs=args.finetune,
    )


def _names(text: str) -> list[str]:
    return [name.strip() for name in text.split(",") if name.strip()]


def _check_layers(config: Config, source: str, **flags: list[str]) -> None:
    """Refuse layer names the network of ``config`` lacks (before any work), listing the valid
    ones. ``flags``: option name with "_" for "-" (``knn_layers``) -> the names given."""
    valid = feature_layers(config.arch, config.widths)
    for flag, names in flags.items():
        unknown = [name for name in names if name not in valid]
        if unknown:
            option = "--" + flag.replace("_", "-")
            raise NatlearnError(
                f"{option} {','.join(unknown)}: no such layer in {source}; "
                f"valid layers: {', '.join(valid)}"
            )


def _eval_layers(args: argparse.Namespace, config: Config, source: str) -> None:
    _check_layers(config, source, layers=_names(args.layers), knn_layers=_names(args.knn_layers))


# Eval sources that are not checkpoints: random init, and two without a network (features of the
# images alone).
_NO_NETWORK = ("raw-pixels", "hand-crafted")
_BASELINES = ("random-init", *_NO_NETWORK)


def _progress(overrides: list[str]) -> bool:
    """The ``progress=`` of a command's key=value settings (progress=false: quiet)."""
    return apply_overrides(Config(), overrides).progress


def _source_config(source: str, base: Config | None, overrides: list[str]) -> Config | None:
    """The config of an eval source with the data overrides (None for raw-pixels and
    hand-crafted), its checkpoint loaded and checked now rather than after the sources before it
    were evaluated."""
    if source in _NO_NETWORK:
        return None
    if source == "random-init":
        return apply_overrides(base or Config(), overrides)
    if not Path(source).exists():
        raise NatlearnError(
            f"{source!r} does not exist; give a run folder, a checkpoint .pt file "
            "(RUN/checkpoints/epoch_NNNN.pt), random-init, raw-pixels or hand-crafted"
        )
    return evaluation_config(load_checkpoint(source), overrides)[0]


def _run_folder(source: str, otherwise: Path) -> Path:
    """The run folder a checkpoint source belongs to (a run folder, or a .pt file in its
    checkpoints/); ``otherwise`` for baselines and checkpoints kept elsewhere."""
    if source in _BASELINES:
        return otherwise
    checkpoints = checkpoint_file(source).parent
    return checkpoints.parent if checkpoints.name == "checkpoints" else otherwise


def _data_overrides(items: list[str]) -> list[str]:
    apply_overrides(Config(), items)  # reject unknown keys before any work
    return items


def _figure_path(out: str) -> Path:
    path = Path(out)
    if path.suffix.lower() != ".png":
        raise NatlearnError(f"--out {out}: the figure is a PNG; give a file name ending in .png")
    return path


# One handler per sub-command (cli.py holds their arguments and `natlearn --help` lines).


def train_command(args: argparse.Namespace) -> None:
    """``natlearn train`` (its arguments: :mod:`natlearn.cli`)."""
    import torch

    from natlearn.training.trainer import train

    result = train(_train_config(args), resume=args.resume, overwrite=args.overwrite)
    if torch.distributed.is_initialized():  # under torchrun: leave together, rank 0 reports
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
        if os.environ.get("RANK") != "0":
            return
    last = result.history[-1] if result.history else {}
    summary = ", ".join(f"{k} {v:.4g}" for k, v in last.items() if k != "epoch")
    run = result.run_dir
    print(
        f"done: {len(result.history)} epochs in {run}: log.jsonl, checkpoints/last.pt, "
        f"backbone.safetensors; last epoch: {summary}\n"
        f"next: natlearn eval {run}  (probes on the frozen features), then natlearn report {run}"
    )


def demo_command(args: argparse.Namespace) -> None:
    """``natlearn demo`` (its arguments: :mod:`natlearn.cli`)."""
    from natlearn.demo import format_table, run_demo

    results = run_demo(args.out, apply_overrides(load_preset("digits"), args.settings))
    print(format_table(results))
    print(f"NAT (penultimate linear probe): {results['gap_note']}")
    print(
        f"wrote {Path(args.out) / 'results.json'}, results.md, loss_curve.png, neighbours.png "
        f"({results['setup']['seconds']} s)"
    )


def eval_command(args: argparse.Namespace) -> None:
    """``natlearn eval`` (its arguments: :mod:`natlearn.cli`)."""
    from natlearn.evaluate import evaluate, format_eval

    baseline = args.source in _BASELINES
    base, overrides = _split_preset(args.settings) if baseline else (None, args.settings)
    settings = _eval_settings(args)
    config = _source_config(args.source, base, _data_overrides(overrides))
    settings.progress = _progress(overrides)
    if config is not None:
        _eval_layers(args, config, args.source)
    out = Path(args.out) if args.out else _run_folder(args.source, Path(".")) / "eval"
    results = evaluate(args.source, overrides, settings, out, base)
    print(format_eval(results))
    print(f"wrote {out / 'eval.json'} and eval.md ({results['seconds']:.0f} s)")
    _refresh_board(args.source)
    print(f"next: {_after_eval(args.source, overrides)}")


def _refresh_board(source: str) -> None:
    """Show the run's evaluations and figures in its TensorBoard (runs with logger=tensorboard)."""
    from natlearn.board import update_board

    run = _run_folder(source, Path(source))
    folder = update_board(run) if (run / "checkpoints").is_dir() else None
    if folder is not None:
        print(f"TensorBoard: evaluations and figures in {folder} (tensorboard --logdir {run})")


def _after_eval(source: str, overrides: list[str]) -> str:
    """The natural next command after evaluating ``source``."""
    data = "".join(f" {item}" for item in overrides)
    if source in _BASELINES:
        trained = "RUN/checkpoints/last.pt"
        return f"natlearn compare {trained} {source}{data} --out DIR (a trained network beside it)"
    baselines = f"{source} random-init raw-pixels{data}"
    compare = f"natlearn compare {baselines} --out DIR (the baselines beside it)"
    run = _run_folder(source, Path(source))
    if (run / "checkpoints").is_dir():
        return f"natlearn report {run} (curves, filters, neighbours and this table), or {compare}"
    return compare


def compare_command(args: argparse.Namespace) -> None:
    """``natlearn compare`` (its arguments: :mod:`natlearn.cli`)."""
    import time

    from natlearn.evaluate import evaluate
    from natlearn.evaluate.compare import compare_table
    from natlearn.progress import say

    sources = [item for item in args.sources if "=" not in item]
    overrides = _data_overrides([item for item in args.sources if "=" in item])
    if not sources:
        raise NatlearnError(
            "compare needs at least one source: checkpoint .pt files, random-init, raw-pixels or "
            "hand-crafted, "
            "before the key=value settings"
        )
    checkpoints = [s for s in sources if s not in _BASELINES]
    settings, out = _eval_settings(args), Path(args.out)
    base = _source_config(checkpoints[0], None, overrides) if checkpoints else None
    for source in sources:  # every checkpoint readable, every layer known, before evaluating
        config = _source_config(source, base, overrides)
        if config is not None:
            _eval_layers(args, config, source)
    settings.progress = _progress(overrides)
    results = {}
    for index, source in enumerate(sources):
        started, name = time.perf_counter(), f"{index}-{_run_folder(source, Path(source)).name}"
        say(f"compare [{index + 1}/{len(sources)}]: {source}", settings.progress)
        # An evaluation of the same network, settings and data is reused: this folder's from an
        # earlier compare (under any name), or the run's own RUN/eval of `natlearn eval`.
        earlier = [
            out / name / "eval.json",
            *sorted(out.glob("*/eval.json")),
            _run_folder(source, out / name) / "eval" / "eval.json",
        ]
        results[name] = evaluate(source, overrides, settings, out / name, base, reuse=earlier)
        took = f"{time.perf_counter() - started:.0f} s"
        say(f"compare [{index + 1}/{len(sources)}]: {source} done, {took}", settings.progress)
    print(compare_table(results, out))
    print(f"wrote {out / 'compare.md'}, compare.json and each source's eval in {out}/N-NAME/")


def neighbors_command(args: argparse.Namespace) -> None:
    """``natlearn neighbors`` (its arguments: :mod:`natlearn.cli`)."""
    from natlearn.board import uses_tensorboard, write_projector
    from natlearn.config import resolve_device
    from natlearn.data import ImageRows
    from natlearn.evaluate import labelled_splits
    from natlearn.evaluate.features import network_features
    from natlearn.evaluate.figures import figure_title, neighbours_figure

    out = _figure_path(args.out)
    for name, value in (("--queries", args.queries), ("--k", args.k)):
        if value < 1:
            raise NatlearnError(f"{name} {value} must be >= 1")
    state = load_checkpoint(args.checkpoint)
    config, _ = evaluation_config(state, args.settings)
    _check_layers(config, args.checkpoint, layer=[args.layer])
    device = resolve_device(apply_overrides(Config(), args.settings).device)
    train_set, test_set = labelled_splits(config, state, args.checkpoint)
    if args.k > len(train_set):
        raise NatlearnError(
            f"--k {args.k} is more than the {len(train_set)} training images; lower --k"
        )
    size = config.resolve(train_set.image_size).crop_size
    view = {"crop": config.crop, "scale": config.crop_scale, "workers": config.workers}
    model = network_from_state(state).to(device)
    # A streamed folder is read a batch at a time; the figure decodes only the images it shows.
    (train_features, train_rows), (test_features, test_rows) = (
        network_features(model, data, [args.layer], size, **view) for data in (train_set, test_set)
    )
    train_features, test_features = train_features[args.layer], test_features[args.layer]
    test_images = ImageRows(test_set, test_rows)
    test_labels = test_set.labels[test_rows]
    panels = {args.layer: (train_features, test_features)}
    figure = neighbours_figure(
        panels,
        ImageRows(train_set, train_rows),
        test_images,
        out,
        args.queries,
        args.k,
        labels=(train_set.labels[train_rows], test_labels),
        classes=train_set.classes,
        title=figure_title(state["config"], state["epoch"], args.layer),
    )
    print(f"wrote {figure}")
    run = _run_folder(args.checkpoint, Path(args.checkpoint))
    if uses_tensorboard(run):
        tag = f"{args.layer}, epoch {state['epoch']}"
        write_projector(run, test_features, test_images, test_labels, train_set.classes, tag)
    _refresh_board(args.checkpoint)


def filters_command(args: argparse.Namespace) -> None:
    """``natlearn filters`` (its arguments: :mod:`natlearn.cli`)."""
    from natlearn.evaluate.figures import figure_title, filters_figure

    out = _figure_path(args.out)
    state = load_checkpoint(args.checkpoint)
    title = figure_title(state["config"], state["epoch"])
    print(f"wrote {filters_figure(network_from_state(state), out, title)}")
    _refresh_board(args.checkpoint)


def evolution_command(args: argparse.Namespace) -> None:
    """``natlearn evolution`` (its arguments: :mod:`natlearn.cli`)."""
    from natlearn.evaluate.evolution import evolution

    settings, overrides = _eval_settings(args), _data_overrides(args.settings)
    settings.progress = _progress(overrides)
    run_dir = Path(args.run_dir)
    if not (run_dir / "checkpoints").is_dir():
        raise NatlearnError(
            f"{args.run_dir} is not a natlearn run folder (no checkpoints/); "
            "give the out= folder of natlearn train"
        )
    paths = checkpoint_paths(run_dir)
    if paths:
        first = Config.from_checkpoint(load_checkpoint(paths[0])["config"], overrides)
        _eval_layers(args, first, str(args.run_dir))
    rows = evolution(args.run_dir, settings, overrides, args.out)
    out = Path(args.out or run_dir / "evolution")
    print(f"evaluated epochs {[row['epoch'] for row in rows]}; wrote {out}")
    _refresh_board(str(run_dir))


def report_command(args: argparse.Namespace) -> None:
    """``natlearn report`` (its arguments: :mod:`natlearn.cli`)."""
    from natlearn.evaluate.report import write_report

    print(f"wrote {write_report(args.run_dir)}")
    _refresh_board(args.run_dir)


def export_command(args: argparse.Namespace) -> None:
    """``natlearn export`` (its arguments: :mod:`natlearn.cli`)."""
    print(f"wrote {export_backbone(args.checkpoint, args.out, args.format)}")


def embed_command(args: argparse.Namespace) -> None:
    """``natlearn embed`` (its arguments: :mod:`natlearn.cli`)."""
    from natlearn.evaluate.embedding import embed

    state = load_checkpoint(args.checkpoint)
    config = Config.from_checkpoint(state["config"], _data_overrides(args.settings))
    _check_layers(config, args.checkpoint, layer=[args.layer])
    written = embed(state, args.settings, args.layer, args.out, args.split, args.batch_size)
    print(written.summary())


# Settings of `natlearn transfer` that are about the VOC data, not the network's config (data_root
# and image_size name the VOC folder and the size its images are resized to).
_TRANSFER_KEYS = ("data_root", "download", "image_size")
_TRANSFER_SIZE = ("alexnet", "resnet18", "resnet34", "resnet50")  # ImageNet archs: 224 by default


def _transfer_settings(items: list[str]) -> tuple[list[str], dict[str, str], list[str]]:
    """(sources, VOC settings, config overrides) of ``natlearn transfer``'s positionals."""
    sources = [item for item in items if "=" not in item]
    pairs = [item for item in items if "=" in item]
    voc = dict(item.split("=", 1) for item in pairs if item.split("=", 1)[0] in _TRANSFER_KEYS)
    overrides = [item for item in pairs if item.split("=", 1)[0] not in _TRANSFER_KEYS]
    return sources, voc, _data_overrides(overrides)


def _transfer_network(state: dict | None, config: Config, spec: dict | None, train_images):
    """The network of a transfer source: a checkpoint's (its loaded ``state``), or for random-init
    (``state`` None) a random init of ``config``, shaped as the first checkpoint's (``spec``) when
    one is compared, else for the VOC train images (``train_images()``: (n, 3, S, S) uint8, whose
    statistics its input layer normalises with)."""
    import torch

    from natlearn.data import ImageDataset
    from natlearn.models import build_model, initial_model

    if state is not None:
        return network_from_state(state)
    if spec is not None:
        torch.manual_seed(config.seed)
        return build_model(config, spec).eval()
    images = ImageDataset.from_images(train_images(), None, [], "VOC train images")
    return initial_model(config, images).eval()


def _transfer_image_size(given: int, config: Config, spec: dict | None, source: str) -> int:
    """image_size= when given; else 224 for AlexNet/ResNets, else the training crop size."""
    if given:
        return given
    if config.arch in _TRANSFER_SIZE:
        return 224
    size = spec["image_size"] if spec is not None else config.crop_size or config.image_size
    if not size:
        raise NatlearnError(
            f"{source}: arch={config.arch} has no training crop size to resize VOC images to; "
            "give image_size=N (e.g. 32), or a checkpoint to take it from"
        )
    return size


def transfer_command(args: argparse.Namespace) -> None:
    """``natlearn transfer`` (its arguments: :mod:`natlearn.cli`)."""
    import dataclasses
    import time

    from natlearn.config import resolve_device
    from natlearn.data.voc import read_voc07
    from natlearn.evaluate import voc_classification as voc
    from natlearn.progress import say

    sources, given, overrides = _transfer_settings(args.items)
    if not sources:
        raise NatlearnError(
            "transfer needs at least one source: run folders, checkpoint .pt files or random-init, "
            "before the key=value settings"
        )
    fixed = [source for source in sources if source in _NO_NETWORK]
    if fixed:
        raise NatlearnError(
            f"transfer {args.benchmark} fine-tunes and probes networks; {fixed[0]} has none: give "
            "run folders, checkpoints or random-init"
        )
    checked = apply_overrides(
        Config(), [f"{key}={value}" for key, value in given.items() if key != "data_root"]
    )  # download and image_size parsed and checked as the config's own
    lrs = _numbers(args.finetune_lr, "--finetune-lr")
    if args.finetune < 0:
        raise NatlearnError(f"--finetune {args.finetune} must be >= 0 (0 = no fine-tuning)")
    settings = voc.ClassifySettings(
        layers=tuple(_names(args.layers)) or ("neck",),
        linear=not args.no_linear,
        finetune_epochs=args.finetune,
        finetune_lrs=lrs,
        progress=_progress(overrides),
    )
    checkpoints = [source for source in sources if source != "random-init"]
    base = _source_config(checkpoints[0], None, overrides) if checkpoints else None
    spec = load_checkpoint(checkpoints[0])["network"] if checkpoints else None
    configs = {source: _source_config(source, base, overrides) for source in sources}
    detect = _detection_settings(args)
    detect_lrs = _numbers(args.detect_lr, "--detect-lr")
    for source, config in configs.items():  # every source readable, every layer known, first
        _check_layers(config, source, layers=list(settings.layers) if settings.linear else [])
        if detect is not None:
            from natlearn.evaluate.detection import detection_layer

            trunk = feature_layers(config.arch, config.widths)[:-2]  # less neck and head
            detection_layer(config.arch, trunk, detect.layer)
        if source == "random-init":  # a checkpoint always knows its size
            _transfer_image_size(checked.image_size, config, spec, source)
    device = resolve_device(apply_overrides(Config(), overrides).device)
    root = given.get("data_root") or "data"
    data = read_voc07(root, checked.download)
    counts = {name: len(getattr(data, name)) for name in ("train", "val", "test")}
    results: dict = {
        "benchmark": args.benchmark,
        "task": args.task,
        "data_root": str(root),
        "classes": list(data.classes),
        "images": counts,
        "settings": {**dataclasses.asdict(settings), "progress": None},
        "setup": (
            f"VOC2007 in {root}: {counts['train']:,} train, {counts['val']:,} val, "
            f"{counts['test']:,} test images, {len(data.classes)} classes. Every choice (weight "
            "decay, learning rate) made on val after fitting on train; the final fit on trainval "
            "(train + val); test scored once. AP11: VOC2007 11-point interpolated AP (the "
            "paper's); AP all: VOC2010+ all-point AP; classes without a test positive are left "
            "out of the mean."
        ),
        "sources": {},
    }
    decoded, out = {}, Path(args.out)
    for index, source in enumerate(sources):
        started, config = time.perf_counter(), configs[source]
        name = f"{index}-{_run_folder(source, Path(source)).name}"
        say(f"transfer [{index + 1}/{len(sources)}]: {source}", settings.progress)
        state = None if source == "random-init" else load_checkpoint(source)
        own = None if state is None else state["network"]
        size = _transfer_image_size(checked.image_size, config, own or spec, source)
        channels = (own or spec or {"channels": 3})["channels"]
        images = decoded.setdefault((size, channels), {})

        def train_images(images=images, size=size, channels=channels):
            if "train" not in images:
                images["train"] = voc.decode_images(
                    data.train, size, channels, settings.progress, "train"
                )
            return images["train"]

        model = _transfer_network(state, config, spec, train_images).to(device)
        entry = {
            "model": source,
            "arch": config.arch,
            "input": config.input,
            "objective": "none (untrained)" if source == "random-init" else config.objective,
            "image_size": size,
            "setup": f"{source}: {config.arch}, {config.input} input, images resized to "
            f"{size}x{size}",
        }
        if source != "random-init":
            entry["checkpoint"] = str(checkpoint_file(source))
        results["sources"][name] = entry
        if args.task in ("classify", "both"):
            entry.update(voc.classification_transfer(model, data, size, settings, images))
            voc.write_transfer(out, results)  # now: a failure in detection keeps these
        if detect is not None:
            from natlearn.evaluate.detection import voc07_detection

            entry["detection"] = voc07_detection(model, data, detect, detect_lrs, settings.progress)
        entry["seconds_total"] = time.perf_counter() - started
        voc.write_transfer(out, results)  # after each source: a crash keeps the finished ones
        took = f"{entry['seconds_total']:.0f} s"
        say(f"transfer [{index + 1}/{len(sources)}]: {source} done, {took}", settings.progress)
    print(voc.format_transfer(results))
    print(f"wrote {out / 'transfer.json'} and transfer.md")


def _numbers(text: str, option: str) -> tuple[float, ...]:
    """Comma-separated positive numbers of ``option``, or a one-line error."""
    try:
        values = tuple(float(item) for item in text.split(",") if item.strip())
    except ValueError:
        values = ()
    if not values or min(values) <= 0:
        raise NatlearnError(
            f"{option} {text!r} must be comma-separated positive numbers, e.g. 0.01"
        )
    return values


def _detection_settings(args: argparse.Namespace):
    """The detection settings of ``--task detect|both`` from the --detect-* options, checked now
    (None for classify)."""
    if args.task == "classify":
        return None
    from natlearn.evaluate.detection import DetectionSettings

    return DetectionSettings(
        image_size=args.detect_size,
        layer=args.detect_layer or None,
        epochs=args.detect_epochs,
        batch_size=args.detect_batch_size,
    ).resolved()
