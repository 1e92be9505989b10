"""CPU training throughput of cifarlab against a Keras 3 implementation of the same models.

The write-up's models (``googlenet_small`` at batch 32, ``resnet18`` at batch 128 by default)
are built twice: by cifarlab (PyTorch) and as Keras 3 functional models defined below, with
the same layers and the same Keras-style parameter totals (checked in every run: a pair
whose counts differ is reported as such and gets no ratio). Each side trains on random uint8
data of CIFAR's shape, already in memory and normalised, so only the training step is timed:
the median images/s over several chunks of batches after untimed warm-up batches.

Every measurement runs in a fresh process of its own (TensorFlow's and PyTorch's thread
pools never share one), one after the other, interleaved: per round and model, cifarlab
float32, Keras float32, cifarlab bf16, Keras mixed_bfloat16 (A B A B ...), so a change of
machine load hits both sides alike. Both sides get the same threads (``--threads``, default
each library's own: every core). The bf16 pair runs by default only where the CPU computes
bf16 natively (elsewhere cifarlab's autocast stays off and Keras emulates bf16, very slowly).

- cifarlab: ``benchmarks/train_throughput.py``'s ``measure`` (the real training step: the
  engine's optimizer, loss and channels-last layout), float32 = ``--no-amp``, bf16 = its
  default bf16 autocast (only where the CPU computes bf16 natively; else it stays float32).
- Keras: ``model.fit`` (verbose 0) with the Keras defaults (``jit_compile`` "auto", which is
  no XLA on a CPU), precision policy ``float32`` or ``mixed_bfloat16``; the final softmax in
  float32 as Keras' mixed-precision guide asks. Optimizer: the same SGD as cifarlab's step
  (momentum 0.9, Nesterov, weight decay 5e-4) by default; ``--keras-optimizer adam`` is the
  write-up's Adam (lr 1e-3).

Keras and TensorFlow are not cifarlab dependencies: they live in their own virtualenv
(``make keras-env`` makes ``.venv-keras``); this script runs under cifarlab's ``.venv`` and
starts the Keras side with ``--keras-python``. Rows go to ``results/keras_throughput.csv``
(one per measurement; ``--no-results`` for smoke runs).

    .venv/bin/python benchmarks/keras_throughput.py                   # both models, 3 rounds
    .venv/bin/python benchmarks/keras_throughput.py --models googlenet_small:32 --rounds 1 \\
        --chunks 2 --batches 2 --warmup 2 --no-results                # a smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULT = "RESULT "  # a worker's last line: RESULT {json}
PRECISIONS = ("float32", "bf16")
KERAS_POLICY = {"float32": "float32", "bf16": "mixed_bfloat16"}
DEFAULT_MODELS = "googlenet_small:32,resnet18:128"
CHUNK_IMAGES = 256  # default chunk: this many images (8 batches of 32, 2 of 128)


# --------------------------------------------------------------------------- Keras models
# Imported only inside the Keras worker (the .venv-keras interpreter).

def keras_googlenet_small(keras, num_classes: int = 10):
    """The write-up's small "GoogLeNet": stem conv-BN-ReLU 16@3x3, four Inception blocks
    (16 stride 2, 16, 32 stride 2, 32) of four branches [1x1 | 1x1->3x3 | 1x1->5x5 |
    maxpool 3 -> 1x1], every conv conv(bias)-BN-ReLU, the stride on each branch's first
    layer; global average pool, dense 10 softmax. 121,418 params (1,184 non-trainable)."""
    L = keras.layers

    def unit(x, ch, k, stride=1):
        x = L.Conv2D(ch, k, strides=stride, padding="same")(x)  # Keras default: with bias
        x = L.BatchNormalization()(x)
        return L.Activation("relu")(x)

    def inception(x, ch, stride):
        b1 = unit(x, ch, 1, stride)
        b3 = unit(unit(x, ch, 1, stride), ch, 3)
        b5 = unit(unit(x, ch, 1, stride), ch, 5)
        bp = unit(L.MaxPooling2D(3, strides=stride, padding="same")(x), ch, 1)
        return L.Concatenate()([b1, b3, b5, bp])

    inputs = keras.Input((32, 32, 3))
    x = unit(inputs, 16, 3)
    for ch, stride in ((16, 2), (16, 1), (32, 2), (32, 1)):
        x = inception(x, ch, stride)
    x = L.GlobalAveragePooling2D()(x)
    outputs = L.Dense(num_classes, activation="softmax", dtype="float32")(x)
    return keras.Model(inputs, outputs, name="googlenet_small")


def keras_resnet18(keras, num_classes: int = 10):
    """The write-up's ResNet-18: stem conv 64@3x3 (no bias)-BN-ReLU, no max-pool; stages
    64/128/256/512 of two basic blocks (conv-BN-ReLU-conv-BN + shortcut, ReLU), a 1x1
    conv-BN projection on the first block of stages 2-4; global average pool, dense 10
    softmax with L2 0.01. 11,183,562 params (9,600 non-trainable)."""
    L = keras.layers

    def conv_bn(x, ch, k, stride=1):
        x = L.Conv2D(ch, k, strides=stride, padding="same", use_bias=False)(x)
        return L.BatchNormalization()(x)

    def block(x, ch, stride):
        y = L.Activation("relu")(conv_bn(x, ch, 3, stride))
        y = conv_bn(y, ch, 3)
        shortcut = conv_bn(x, ch, 1, stride) if stride != 1 or x.shape[-1] != ch else x
        return L.Activation("relu")(L.Add()([y, shortcut]))

    inputs = keras.Input((32, 32, 3))
    x = L.Activation("relu")(conv_bn(inputs, 64, 3))
    for i, ch in enumerate((64, 128, 256, 512)):
        for j in range(2):
            x = block(x, ch, 2 if i and not j else 1)
    x = L.GlobalAveragePooling2D()(x)
    outputs = L.Dense(num_classes, activation="softmax", dtype="float32",
                      kernel_regularizer=keras.regularizers.L2(0.01))(x)
    return keras.Model(inputs, outputs, name="resnet18")


KERAS_MODELS = {"googlenet_small": keras_googlenet_small, "resnet18": keras_resnet18}


def keras_worker(args: argparse.Namespace) -> dict:
    """One Keras measurement in this process: build, fit, time the batches after warm-up."""
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import numpy as np
    import tensorflow as tf
    if args.threads:
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    import keras

    keras.config.set_dtype_policy(KERAS_POLICY[args.precision])
    keras.utils.set_random_seed(0)
    model = KERAS_MODELS[args.model](keras)
    if args.keras_optimizer == "adam":  # the write-up's
        opt = keras.optimizers.Adam(learning_rate=1e-3)
    else:  # cifarlab's default step (TrainConfig: sgd, momentum 0.9, nesterov, weight decay 5e-4)
        opt = keras.optimizers.SGD(learning_rate=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4)
    model.compile(optimizer=opt, loss="sparse_categorical_crossentropy", metrics=["accuracy"],
                  jit_compile=True if args.keras_jit else "auto")

    steps = args.warmup + args.chunks * args.batches
    rng = np.random.default_rng(0)
    x = (rng.integers(0, 256, (steps, args.batch_size, 32, 32, 3), dtype=np.uint8) / 255).astype("float32")
    y = rng.integers(0, 10, (steps, args.batch_size), dtype=np.int64)
    data = tf.data.Dataset.from_tensor_slices((x, y)).prefetch(2)  # one element = one batch

    ends: list[float] = []

    class Clock(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            float(logs["loss"])  # the step's result exists: nothing still runs behind the clock
            ends.append(time.perf_counter())

    model.fit(data, epochs=1, verbose=0, shuffle=False, callbacks=[Clock()])
    if len(ends) != steps:
        raise RuntimeError(f"Keras ran {len(ends)} batches, expected {steps}")
    rates = []
    for c in range(args.chunks):
        first = args.warmup + c * args.batches  # the chunk runs from the end of batch first-1
        seconds = ends[first + args.batches - 1] - ends[first - 1]
        rates.append(args.batches * args.batch_size / seconds)
    nontrainable = sum(int(np.prod(w.shape)) for w in model.non_trainable_weights)
    convs = sorted([*layer.kernel.shape, *layer.output.shape[1:3], layer.strides[0]]  # kh kw cin cout h w s
                   for layer in model.layers if isinstance(layer, keras.layers.Conv2D))
    return {"rates": rates, "params": int(model.count_params()), "nontrainable": nontrainable, "convs": convs,
            "policy": keras.config.dtype_policy().name, "optimizer": args.keras_optimizer,
            "jit_compile": bool(model.jit_compile),
            # 0 = TensorFlow picks (every core)
            "threads": tf.config.threading.get_intra_op_parallelism_threads() or "tf default",
            "inter_op": tf.config.threading.get_inter_op_parallelism_threads() or "tf default",
            "versions": f"tensorflow {tf.__version__} | keras {keras.__version__} ({keras.backend.backend()})",
            "onednn": os.environ.get("TF_ENABLE_ONEDNN_OPTS", "default")}


def torch_convs(model) -> list[list[int]]:
    """A torch model's conv layers as the Keras side lists its own: [kh, kw, cin, cout, h, w,
    stride] with the output size of one 32x32 image, sorted."""
    import torch
    convs, handles = [], []

    def hook(m, _, out):
        convs.append([*m.weight.shape[2:], m.in_channels, m.out_channels, *out.shape[2:], m.stride[0]])
    for m in model.modules():
        if isinstance(m, torch.nn.Conv2d):
            handles.append(m.register_forward_hook(hook))
    was_training = model.training
    with torch.no_grad():
        model.eval()(torch.zeros(1, 3, 32, 32))
    model.train(was_training)
    for h in handles:
        h.remove()
    return sorted(convs)


def cifarlab_worker(args: argparse.Namespace) -> dict:
    """One cifarlab measurement in this process, through train_throughput.py's ``measure``."""
    import torch

    import train_throughput  # benchmarks/ is this script's folder, first on sys.path
    from cifarlab.models import create_model
    from cifarlab.models.registry import count_params
    if args.threads:
        torch.set_num_threads(args.threads)
    targs = train_throughput.parse(["--model", args.model, "--batch-size", str(args.batch_size),
                                    "--batches", str(args.batches), "--chunks", str(args.chunks),
                                    "--warmup", str(args.warmup), "--device", "cpu", "--no-results",
                                    "--amp" if args.precision == "bf16" else "--no-amp"])
    result = train_throughput.measure(targs)
    model = create_model(args.model)
    counts = count_params(model)
    return {"rates": result["rates"], "params": counts.keras_total, "nontrainable": counts.keras_nontrainable,
            "convs": torch_convs(model),
            "amp": result["amp"], "optimizer": result["optimizer"], "threads": result["threads"],
            "channels_last": result["channels_last"], "versions": f"torch {torch.__version__}"}


# --------------------------------------------------------------------------- the driver

def parse(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default=DEFAULT_MODELS,
                   help=f"MODEL:BATCH, comma separated (default {DEFAULT_MODELS}); models: "
                        f"{', '.join(KERAS_MODELS)}")
    p.add_argument("--precisions", default="auto",
                   help="float32 (cifarlab --no-amp, Keras 'float32') and/or bf16 (cifarlab's bf16 "
                        "autocast, Keras 'mixed_bfloat16'), comma separated; default auto: both where "
                        "the CPU computes bf16 natively, else float32 (Keras emulates bf16 there, "
                        "tens of times slower: ask for it by name)")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds (the figure: median over rounds)")
    p.add_argument("--batches", type=int, default=None,
                   help=f"batches per timed chunk (default: {CHUNK_IMAGES} images' worth, at least 1)")
    p.add_argument("--chunks", type=int, default=5, help="timed chunks per measurement (its median is one figure)")
    p.add_argument("--warmup", type=int, default=3, help="untimed batches first (at least 1)")
    p.add_argument("--threads", type=int, default=None,
                   help="intra-op threads on both sides (default: each library's own, every core)")
    p.add_argument("--keras-python", default=str(ROOT / ".venv-keras" / "bin" / "python"),
                   help="the interpreter with keras and tensorflow-cpu (default .venv-keras: make keras-env)")
    p.add_argument("--keras-optimizer", choices=("sgd", "adam"), default="sgd",
                   help="sgd: cifarlab's step (momentum 0.9, Nesterov, weight decay); adam: the write-up's")
    p.add_argument("--keras-jit", action="store_true",
                   help="compile Keras' step with XLA (jit_compile=True); the default is Keras' own, "
                        "which on a CPU is no XLA")
    p.add_argument("--verbose", action="store_true", help="print each worker's own output")
    p.add_argument("--results", default=None, metavar="FOLDER",
                   help="append rows to FOLDER/keras_throughput.csv (default: $CIFARLAB_RESULTS, else results/)")
    p.add_argument("--no-results", action="store_true", help="print only; append no rows")
    # one measurement in this process (what the driver starts)
    p.add_argument("--worker", choices=("keras", "cifarlab"), help=argparse.SUPPRESS)
    p.add_argument("--model", help=argparse.SUPPRESS)
    p.add_argument("--batch-size", type=int, help=argparse.SUPPRESS)
    p.add_argument("--precision", choices=PRECISIONS, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.warmup < 1 or args.chunks < 1 or (args.batches is not None and args.batches < 1) or args.rounds < 1:
        p.error("--warmup, --chunks, --batches and --rounds must each be at least 1")
    if args.worker:
        return args
    args.pairs = []
    for item in args.models.split(","):
        name, _, batch = item.strip().partition(":")
        if name not in KERAS_MODELS:
            p.error(f"--models: no Keras definition of {name!r} here; choose from {', '.join(KERAS_MODELS)}")
        if not batch.isdigit() or int(batch) < 1:
            p.error(f"--models: give each model its batch as MODEL:BATCH (e.g. {name}:32), got {item!r}")
        args.pairs.append((name, int(batch)))
    args.precision_list = [x.strip() for x in args.precisions.split(",") if x.strip()]
    bad = [x for x in args.precision_list if x not in PRECISIONS]
    if args.precision_list == ["auto"]:  # decided by main(), which knows the CPU
        bad = []
    if bad or not args.precision_list:
        p.error(f"--precisions: choose from {', '.join(PRECISIONS)}, got {args.precisions!r}")
    if not Path(args.keras_python).exists():
        p.error(f"no Keras interpreter at {args.keras_python}: run `make keras-env` first "
                "(or pass --keras-python PATH)")
    return args


def chunk_batches(batch: int, args: argparse.Namespace) -> int:
    return args.batches or max(1, CHUNK_IMAGES // batch)


def run_worker(side: str, model: str, batch: int, precision: str, args: argparse.Namespace) -> dict:
    """Start one measurement in a fresh process and return its RESULT; exits on failure."""
    python = args.keras_python if side == "keras" else sys.executable
    cmd = [python, str(Path(__file__).resolve()), "--worker", side, "--model", model,
           "--batch-size", str(batch), "--precision", precision, "--batches", str(chunk_batches(batch, args)),
           "--chunks", str(args.chunks), "--warmup", str(args.warmup),
           "--keras-optimizer", args.keras_optimizer, "--keras-python", args.keras_python]
    cmd += ["--keras-jit"] if args.keras_jit else []
    cmd += ["--threads", str(args.threads)] if args.threads else []
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(HERE), os.environ.get("PYTHONPATH")]))}
    if side == "keras":
        env.pop("PYTHONPATH")  # nothing of cifarlab's in the Keras process
    t = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t
    lines = proc.stdout.splitlines()
    if args.verbose:
        print("\n".join("    " + line for line in lines if not line.startswith(RESULT)), flush=True)
    found = [line[len(RESULT):] for line in lines if line.startswith(RESULT)]
    if proc.returncode or not found:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-15:])
        sys.exit(f"keras_throughput: the {side} measurement of {model} ({precision}) failed "
                 f"(exit {proc.returncode}):\n{tail}")
    return {**json.loads(found[-1]), "wall_s": round(wall, 1)}


def describe(res: dict) -> tuple:
    """What a worker built: (params, non-trainable, conv layers as (kh kw cin cout h w stride), conv
    multiply-accumulates per image); equal on both sides = the same computation."""
    convs = tuple(tuple(c) for c in res["convs"])
    macs = sum(kh * kw * cin * cout * h * w for kh, kw, cin, cout, h, w, _ in convs)
    return res["params"], res["nontrainable"], convs, macs


def main(argv=None) -> None:
    args = parse(argv)
    if args.worker:
        result = (keras_worker if args.worker == "keras" else cifarlab_worker)(args)
        print(RESULT + json.dumps(result), flush=True)
        return

    import torch

    from _env import environment, record, series_name
    from cifarlab.inference.hardware import bf16_native
    print(environment(torch.device("cpu"), packages=("torch",)), flush=True)
    if args.precision_list == ["auto"]:
        args.precision_list = list(PRECISIONS) if bf16_native(torch.device("cpu")) else ["float32"]
        if len(args.precision_list) == 1:
            print("precisions: float32 only: this CPU computes no bf16 natively, so cifarlab would run "
                  "float32 and Keras' mixed_bfloat16 emulated (--precisions float32,bf16 runs it anyway)")
    chunking = ", ".join(f"{m} {chunk_batches(b, args)} x {b}" for m, b in args.pairs)
    print(f"cifarlab {sys.executable} | Keras {args.keras_python} | rounds {args.rounds}, "
          f"{args.chunks} chunks of {chunking} images after {args.warmup} warm-up batches | "
          f"Keras optimizer {args.keras_optimizer}, jit_compile {'True' if args.keras_jit else 'auto'}", flush=True)
    series = series_name("keras_throughput")
    figures: dict[tuple[str, str, str], list[float]] = {}
    shape: dict[tuple[str, str], tuple] = {}  # what each side built: its params and conv layers
    emulated: set[str] = set()  # models whose cifarlab "bf16" ran float32 (no native bf16 here)
    for r in range(1, args.rounds + 1):
        for model, batch in args.pairs:
            for precision in args.precision_list:
                for side in ("cifarlab", "keras"):  # A B A B: each pair back to back
                    res = run_worker(side, model, batch, precision, args)
                    rate = statistics.median(res["rates"])
                    figures.setdefault((model, precision, side), []).append(rate)
                    shape[(model, side)] = describe(res)
                    if side == "cifarlab" and precision == "bf16" and not res["amp"]:
                        emulated.add(model)
                    what = (f"keras {res['policy']}" if side == "keras"
                            else f"cifarlab {'bf16 autocast' if res['amp'] else 'float32'}")
                    if r == 1 and side == "keras" and model == args.pairs[0][0] and precision == args.precision_list[0]:
                        print(f"Keras side: {res['versions']} | intra-op {res['threads']}, inter-op "
                              f"{res['inter_op']} threads | oneDNN {res['onednn']}", flush=True)
                    print(f"round {r} | {model} batch {batch} | {what:<24} {rate:7.0f} images/s "
                          f"(chunks {min(res['rates']):.0f}-{max(res['rates']):.0f}, {res['threads']} threads, "
                          f"{res['wall_s']:.0f} s with start-up) | params {res['params']:,}", flush=True)
                    record("keras_throughput", {
                        "series": series, "round": r, "model": model, "batch_size": batch,
                        "framework": side, "precision": precision,
                        "compute": res["policy"] if side == "keras" else ("bf16 autocast" if res["amp"] else "float32"),
                        "optimizer": res["optimizer"],
                        "keras_jit": res.get("jit_compile") if side == "keras" else None,
                        "images_per_s": round(rate), "images_per_s_min": round(min(res["rates"])),
                        "images_per_s_max": round(max(res["rates"])), "chunks": args.chunks,
                        "batches": chunk_batches(batch, args), "warmup": args.warmup, "threads": res["threads"],
                        "params": res["params"], "conv_macs": describe(res)[3], "versions": res["versions"],
                        "load_avg": round(os.getloadavg()[0], 2),
                    }, device=torch.device("cpu"), args=args)

    print("\ncifarlab / Keras, median images/s over rounds (per-round ratios in brackets):")
    for model, batch in args.pairs:
        ours, theirs = shape[(model, "cifarlab")], shape[(model, "keras")]
        if ours != theirs:
            print(f"{model}: the two sides built different models (params, non-trainable, conv layers, conv "
                  f"MACs per image: cifarlab {ours[:2]} {len(ours[2])} {ours[3]:,}, Keras {theirs[:2]} "
                  f"{len(theirs[2])} {theirs[3]:,}): no ratio")
            continue
        print(f"{model}: the same model on both sides: {ours[0]:,} params ({ours[1]:,} non-trainable), "
              f"{len(ours[2])} conv layers of the same shapes and strides, {ours[3] / 1e6:.1f} M conv MACs per image")
        for precision in args.precision_list:
            ours, theirs = figures[(model, precision, "cifarlab")], figures[(model, precision, "keras")]
            per_round = ", ".join(f"{a / b:.2f}" for a, b in zip(ours, theirs))
            print(f"{model:<16} batch {batch:<4} {precision:<8} cifarlab {statistics.median(ours):6.0f} | Keras "
                  f"{statistics.median(theirs):6.0f} ({KERAS_POLICY[precision]}) | "
                  f"x{statistics.median(ours) / statistics.median(theirs):.2f} [{per_round}]")
        if model in emulated:
            print(f"{model:<16} note: this CPU computes no bf16 natively, so cifarlab's bf16 run was float32 "
                  "(its autocast stays off) while Keras' mixed_bfloat16 ran emulated")
        if set(PRECISIONS) <= set(args.precision_list):
            ours = statistics.median(figures[(model, "bf16", "cifarlab")])
            theirs = statistics.median(figures[(model, "float32", "keras")])
            print(f"{model:<16} batch {batch:<4} cifarlab's default (bf16 autocast) against Keras' default "
                  f"(float32): x{ours / theirs:.2f}")


if __name__ == "__main__":
    main()
