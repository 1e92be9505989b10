"""`cifarlab models`, `cifarlab summary`, `cifarlab diagram`: browse and inspect the zoo."""

from __future__ import annotations

import argparse
import json
import sys

from cifarlab.cli._help import Defaults


def register(sub: argparse._SubParsersAction) -> None:
    fmt = Defaults
    p = sub.add_parser("models", help="list the model zoo: size, compute, accuracy measured and reported",
                       formatter_class=fmt)
    p.add_argument("pattern", nargs="?", default="*", help="fnmatch pattern, e.g. 'resnet*'")
    p.add_argument("--wide", action="store_true",
                   help="every column: Keras totals, what each reproduces, where the measured figure came from")
    p.add_argument("--json", action="store_true", help="print a JSON list (every field) instead of a table")
    p.set_defaults(func=run_models)

    model_help = ("a model-zoo name (see `cifarlab models`), or a trained model: 'default' (the shipped "
                  "model), a run's name or id, a run folder, a .pt or .onnx file")
    p = sub.add_parser("summary", help="per-layer table, totals and training memory of a model",
                       formatter_class=fmt)
    p.add_argument("name", metavar="MODEL", help=model_help)
    p.add_argument("--batch-size", type=int, default=32, help="for the memory figures")
    p.add_argument("--in-chans", type=int, default=3, help="1 for grayscale input")
    p.add_argument("--device", default="auto", help="where to measure memory: auto, cpu, cuda")
    p.add_argument("--no-memory", dest="memory", action="store_false",
                   help="skip measuring one training step's memory (the slow part on a CPU)")
    p.set_defaults(func=run_summary)

    p = sub.add_parser("diagram", help="draw the architecture with its joins and shapes (.svg, or .png)",
                       formatter_class=fmt)
    p.add_argument("name", metavar="MODEL", help=model_help)
    p.add_argument("-o", "--output", required=True, help="file ending in .svg or .png; its folder must exist")
    p.add_argument("--in-chans", type=int, default=3, help="1 for grayscale input")
    p.set_defaults(func=run_diagram)


def model_rows(pattern: str = "*") -> list[dict]:
    """The zoo's facts (cifarlab.zoo, no torch) of the models matching ``pattern``, each with its
    best measured accuracy from results/ (``measured``: None when never measured)."""
    import fnmatch

    from cifarlab import results
    from cifarlab.zoo import facts
    rows = [dict(r) for r in facts() if fnmatch.fnmatchcase(r["name"], pattern)]
    try:
        measured = results.measured_accuracies([r["name"] for r in rows])
    except Exception as exc:  # a damaged results/ file must not hide the zoo
        print(f"cifarlab: warning: results/ unreadable ({exc}); measured column left empty", file=sys.stderr)
        measured = {}
    for r in rows:
        r["measured"] = measured.get(r["name"])
    return rows


def run_models(args: argparse.Namespace) -> int:
    from cifarlab.errors import ModelError
    rows = model_rows(args.pattern)
    if not rows:
        raise ModelError(f"no model matches {args.pattern!r}: run `cifarlab models` to list them all")
    try:
        if args.json:
            print(json.dumps(rows, indent=2, default=str))
        else:
            (_print_wide if args.wide else _print_narrow)(rows)
        sys.stdout.flush()
    except BrokenPipeError:  # `cifarlab models | head`: the reader left; no traceback
        from cifarlab.cli._help import reader_left
        reader_left()
    return 0


def _measured(m: dict | None) -> str:
    return "never" if m is None else f"{m['test_top1_pct']:.1f}%"


def _measured_detail(m: dict | None) -> str:
    if m is None:
        return "never measured"
    from cifarlab import results
    budget = f", {float(m['budget_s']):.0f}-s budget" if m.get("budget_s") else ""
    epochs = f", {m['epochs']} epoch{'' if str(m['epochs']) == '1' else 's'}" if m.get("epochs") else ""
    where = f" on {m['machine']}" if m.get("machine") else ""
    return f"{results.format_accuracy(m)}{budget}{epochs}{where}"


def _ref(r: dict) -> str:
    return "-" if r["ref_accuracy"] is None else f"{r['ref_accuracy']:.0%}"


def _print_narrow(rows: list[dict]) -> None:
    """Fits 80 columns: name, size, compute, a few words, measured and reported accuracy."""
    from rich import box
    from rich.console import Console
    from rich.table import Table

    console = Console(highlight=False)
    cells = [(r["name"], _short(r["params"]), _short(r["macs"]), " " + r["summary"], _measured(r["measured"]),
              _ref(r)) for r in rows]
    heads = ("name", "params", "MACs", " what it is", "measured", "paper")
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(heads)]
    # the description gets what the other columns leave (2 spaces between columns)
    room = max(8, console.width - sum(w for i, w in enumerate(widths) if i != 3) - 2 * (len(heads) - 1))
    widths[3] = min(widths[3], room)
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, padding=(0, 0), collapse_padding=True,
                  caption="MACs per 32x32 image. measured: best test top-1 in results/ (never: not yet); "
                          "paper: what the tutorial or paper reported. More: --wide, --json.",
                  caption_justify="left")
    for i, head in enumerate(heads):
        table.add_column(head, justify="left" if i in (0, 3) else "right", no_wrap=True, overflow="ellipsis",
                         width=widths[i] + (1 if i else 0))  # one space before, one divider after
    for c in cells:
        table.add_row(*c)
    console.print(table)
    _print_trained(console)


def _print_wide(rows: list[dict]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="cifarlab models (MACs per 32x32 image; Keras total = params + BN moving stats)")
    table.add_column("name", no_wrap=True)
    for col in ("params", "Keras total", "MACs"):
        table.add_column(col, justify="right", no_wrap=True)
    table.add_column("what it reproduces", ratio=2, min_width=20)
    table.add_column("measured (results/)", ratio=1, min_width=14)
    table.add_column("paper", justify="right", no_wrap=True)
    for r in rows:
        mark = {True: " [green]=ref[/]", False: " [red]!=ref[/]", None: ""}[r["keras_total_matches"]]
        table.add_row(r["name"], f"{r['params']:,}", f"{r['keras_total']:,}{mark}", _si(r["macs"]),
                      r["reproduces"] + (f" [dim]({r['notes']})[/]" if r["notes"] else ""),
                      _measured_detail(r["measured"]), _ref(r))
    console = Console(highlight=False)
    console = Console(highlight=False, width=max(console.width, 160))  # --wide: wider than the terminal if need be
    console.print(table)
    _print_trained(console)


def _print_trained(console) -> None:
    """The architectures above are untrained; say which trained ones are ready to use."""
    from cifarlab.resolve import shipped_models
    names = ", ".join(shipped_models())
    if names:
        console.print(f"Trained and ready: {names} (`cifarlab predict default PICTURE`, `cifarlab serve`); "
                      f"your finished runs too (`cifarlab runs`).")


def _short(n: float) -> str:
    """At most 4 characters: 62K, 294K, 1.2M, 118M, 4.2G."""
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= scale:
            v = n / scale
            return f"{v:.1f}{unit}" if v < 10 else f"{v:.0f}{unit}"
    return str(int(n))


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


def _build(ref: str, in_chans: int):
    """``(zoo name, model)`` of a zoo name or a trained model's architecture (cifarlab.resolve)."""
    from cifarlab.models import create_model
    from cifarlab.resolve import architecture
    name, kwargs = architecture(ref)
    if in_chans != 3 or "in_chans" not in kwargs:
        kwargs["in_chans"] = in_chans
    num_classes = kwargs.pop("num_classes", 10)
    return name, create_model(name, num_classes=num_classes, **kwargs)


def run_summary(args: argparse.Namespace) -> int:
    from rich.console import Console

    from cifarlab.models import count_params
    from cifarlab.models.inspect import macs, measure_train_step_memory, notebook_memory_estimate, trace

    _check_positive("--batch-size", args.batch_size)
    _check_positive("--in-chans", args.in_chans)
    device = _device(args.device)
    name, model = _build(args.name, args.in_chans)
    size = (model_in_chans(model, args.in_chans), 32, 32)
    records = trace(model, size)
    console = Console(highlight=False)
    title = name if name == args.name else f"{args.name} ({name})"
    console.print(_layer_table(title, records))
    pc = count_params(model)
    console.print(f"Trainable params:      {pc.trainable:,}\n"
                  f"Non-trainable params:  {pc.non_trainable:,} (PyTorch) / {pc.keras_nontrainable:,} (Keras: BN moving stats)\n"
                  f"Keras-style total:     {pc.keras_total:,}\n"
                  f"MACs per image:        {macs(model, size):,}")
    if not args.memory:
        return 0
    measured = measure_train_step_memory(model, args.batch_size, size, device)
    estimate = notebook_memory_estimate(model, args.batch_size, size, records)
    console.print(f"Training memory at batch {args.batch_size}, measured on {measured.device}: "
                  f"{_mib(measured.peak_bytes)}\n"
                  f"  ({measured.method}: weights, gradients, momentum and the step's activations)\n"
                  f"  The Colab Inception notebook's formula would say {_mib(estimate)}: it multiplies the "
                  f"parameters by the batch size as well and leaves out gradients and optimizer state, so "
                  f"it is no guide.")
    return 0


def model_in_chans(model, asked: int) -> int:
    """The input channels ``model`` was built for (its first conv's), else ``asked``."""
    import torch.nn as nn
    first = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    return first.in_channels if first is not None else asked


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
    from cifarlab.models import count_params
    from cifarlab.models.diagram import write_diagram

    _check_positive("--in-chans", args.in_chans)
    name, model = _build(args.name, args.in_chans)
    shown = name if name == args.name else f"{args.name} ({name})"
    title = f"{shown} ({count_params(model).trainable:,} params)"
    path = write_diagram(model, args.output, title, (model_in_chans(model, args.in_chans), 32, 32))
    print(f"wrote {path}")
    return 0
