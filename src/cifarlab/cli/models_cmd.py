"""`cifarlab models`, `cifarlab summary`, `cifarlab diagram`: browse and inspect the zoo."""

from __future__ import annotations

import argparse
import json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="list the model zoo (parameters, MACs, what each reproduces)")
    p.add_argument("pattern", nargs="?", default="*", help="fnmatch pattern, e.g. 'resnet*'")
    p.add_argument("--json", action="store_true", help="print a JSON list instead of a table")
    p.set_defaults(func=run_models)

    p = sub.add_parser("summary", help="Keras-style per-layer table, totals and training memory")
    p.add_argument("name")
    p.add_argument("--batch-size", type=int, default=32, help="for the memory figures (default 32)")
    p.add_argument("--in-chans", type=int, default=3, help="1 for grayscale input")
    p.add_argument("--device", default="auto", help="where to measure memory: auto, cpu, cuda")
    p.set_defaults(func=run_summary)

    p = sub.add_parser("diagram", help="draw the architecture with shapes (.svg, or .png with matplotlib)")
    p.add_argument("name")
    p.add_argument("-o", "--output", required=True, help="file ending in .svg or .png")
    p.add_argument("--in-chans", type=int, default=3)
    p.set_defaults(func=run_diagram)


def _describe(name: str) -> dict:
    import torch

    from cifarlab.models import count_params, create_model, model_info
    from cifarlab.models.inspect import macs

    info = model_info(name)
    with torch.device("meta"):  # shapes only: no memory, no initialisation cost
        model = create_model(name)
    pc = count_params(model)
    matches = None if info.ref_params is None else pc.keras_total == info.ref_params
    return {"name": name, "family": info.family, "faithful": info.faithful,
            "reproduces": info.reproduces, "params": pc.trainable, "keras_total": pc.keras_total,
            "keras_nontrainable": pc.keras_nontrainable, "macs": macs(model),
            "ref_params": info.ref_params, "ref_nontrainable": info.ref_nontrainable,
            "keras_total_matches": matches, "ref_accuracy": info.ref_accuracy,
            "notes": info.notes, "default_kwargs": info.default_kwargs}


def run_models(args: argparse.Namespace) -> int:
    from cifarlab.errors import ModelError
    from cifarlab.models import list_models

    names = list_models(args.pattern)
    if not names:
        raise ModelError(f"no model matches {args.pattern!r}: run `cifarlab models` to list them all")
    rows = [_describe(n) for n in names]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    _print_models_table(rows)
    _print_trained_models()
    return 0


def _print_trained_models() -> None:
    """The architectures above are untrained; say which trained ones are ready to use."""
    from cifarlab.catalog import Catalog
    entries = Catalog(runs=False).entries()
    for e in entries:
        acc = f"{e.accuracy:.2%}" if e.accuracy is not None else "not measured"
        print(f"trained and ready: {e.name} = {e.model}, test top-1 {acc} on the shared CIFAR-10 "
              f"JPEG copy (`cifarlab predict {e.name} PICTURE`, `cifarlab serve`); your finished runs "
              f"appear beside it there")


def _print_models_table(rows: list[dict]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="cifarlab models (MACs per 32x32 image; Keras total = params + BN moving stats)")
    table.add_column("name", no_wrap=True, min_width=max(len(r["name"]) for r in rows))
    # numbers never wrap or truncate; only the free-text column gives way on narrow terminals
    for col in ("params", "Keras total", "MACs"):
        table.add_column(col, justify="right", no_wrap=True)
    table.add_column("reproduces", ratio=1, min_width=12)
    table.add_column("ref acc", justify="right", no_wrap=True)
    for r in rows:
        mark = {True: " [green]=ref[/]", False: " [red]!=ref[/]", None: ""}[r["keras_total_matches"]]
        acc = f"{r['ref_accuracy']:.0%}" if r["ref_accuracy"] is not None else "-"
        table.add_row(r["name"], f"{r['params']:,}", f"{r['keras_total']:,}{mark}",
                      _si(r["macs"]), r["reproduces"], acc)
    Console().print(table)


def _si(n: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= scale:
            return f"{n / scale:.2f}{unit}"
    return str(int(n))


def _device(arg: str) -> str:
    import torch

    from cifarlab.errors import ConfigError

    if arg == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if arg.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"--device {arg}: no CUDA device here; use --device cpu")
    if not arg.startswith(("cpu", "cuda")):
        raise ConfigError(f"--device {arg!r}: use auto, cpu or cuda")
    return arg


def _check_positive(flag: str, value: int) -> None:
    from cifarlab.errors import ConfigError

    if value < 1:
        raise ConfigError(f"{flag} must be a positive integer, got {value}")


def run_summary(args: argparse.Namespace) -> int:
    from rich.console import Console

    from cifarlab.models import count_params, create_model
    from cifarlab.models.inspect import macs, measure_train_step_memory, notebook_memory_estimate, trace

    _check_positive("--batch-size", args.batch_size)
    _check_positive("--in-chans", args.in_chans)
    device = _device(args.device)
    model = create_model(args.name, in_chans=args.in_chans)
    size = (args.in_chans, 32, 32)
    records = trace(model, size)
    console = Console()
    console.print(_layer_table(args.name, records))
    pc = count_params(model)
    console.print(f"Trainable params:      {pc.trainable:,}\n"
                  f"Non-trainable params:  {pc.non_trainable:,} (PyTorch) / {pc.keras_nontrainable:,} (Keras: BN moving stats)\n"
                  f"Keras-style total:     {pc.keras_total:,}\n"
                  f"MACs per image:        {macs(model, size):,}")
    estimate = notebook_memory_estimate(model, args.batch_size, size, records)
    measured = measure_train_step_memory(model, args.batch_size, size, device)
    console.print(f"Training memory at batch {args.batch_size}:\n"
                  f"  estimate (colab-inception-v1 notebook formula: 4 B x batch x (layer outputs + params)): "
                  f"{_mib(estimate)}\n"
                  f"  measured on {measured.device}: {_mib(measured.peak_bytes)} ({measured.method})")
    return 0


def _mib(n: int | None) -> str:
    return "n/a" if n is None else f"{n / 2**20:,.1f} MiB"


def _layer_table(name: str, records):
    from rich.table import Table

    table = Table(title=f"{name}: layers (output shapes per image, channels first)")
    table.add_column("layer (type)")
    table.add_column("output shape")
    table.add_column("params", justify="right")
    for r in records:
        shapes = " + ".join(str(s) for s in r.output_shapes)
        table.add_row(f"{r.name} ({r.kind})", shapes, f"{r.keras_params:,}")
    return table


def run_diagram(args: argparse.Namespace) -> int:
    from cifarlab.models import count_params, create_model
    from cifarlab.models.diagram import write_diagram

    _check_positive("--in-chans", args.in_chans)
    model = create_model(args.name, in_chans=args.in_chans)
    title = f"{args.name} ({count_params(model).trainable:,} params)"
    path = write_diagram(model, args.output, title, (args.in_chans, 32, 32))
    print(f"wrote {path}")
    return 0
