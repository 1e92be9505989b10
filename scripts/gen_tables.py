"""Rewrite the generated tables of README.md and docs/cpu-frontier.md from results/.

    python scripts/gen_tables.py           # rewrite every marked block
    python scripts/gen_tables.py --check   # exit 1 (naming the stale blocks) if any would change

A block is the text between ``<!-- results:NAME -->`` and ``<!-- /results -->``; NAME picks
the table (``TABLES`` below). Everything outside the markers is left as it is. The numbers
come only from ``results/*.csv`` through ``cifarlab.results``.

Run without file arguments it also writes ``src/cifarlab/assets/measured.json``: the rows that
measured each shipped file now (calibration and corruptions, the last row per file, as the
model cards pick them), so that an installed package, which has no results/ folder, still
shows them on its model cards.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))  # a checkout without `pip install -e .` works too

from cifarlab import results  # noqa: E402

FILES = [ROOT / "README.md", ROOT / "docs" / "cpu-frontier.md"]
BLOCK = re.compile(r"(<!-- results:([\w-]+) -->\n)(.*?)(<!-- /results -->)", re.S)
CPU_RECIPES = ["cpu-2min", "cpu-5min", "cpu-15min", "cpu-45min"]
GOALS = {"cpu-2min": 85, "cpu-5min": 90, "cpu-15min": 93, "cpu-45min": 94}  # the project's goals, not results


def _table(head: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def _pct(group: dict, key: str = "test_top1_pct") -> str:
    return results.format_accuracy(group) if key == "test_top1_pct" else "-"


def _plain(rows: list[dict]) -> str:
    values = [r["test_top1_plain_pct"] for r in rows if r.get("test_top1_plain_pct") is not None]
    return f"{sum(values) / len(values):.2f}%" if values else "-"


def _wall(group: dict) -> str:
    w = group.get("wall_s_range")
    if not w:
        return "-"
    return f"{w[0]:,.0f} s" if round(w[0]) == round(w[1]) else f"{w[0]:,.0f}-{w[1]:,.0f} s"


def _members(group: dict, rows: list[dict]) -> list[dict]:
    same = [r for r in rows if all(r.get(k) == group.get(k) for k in results.GROUP_KEYS)
            and results.series_key(r) == results.series_key(group)]
    return same


def _epochs(rows: list[dict]) -> str:
    e = sorted({r["epochs"] for r in rows if r.get("epochs") is not None})
    return "-" if not e else str(e[0]) if len(e) == 1 else f"{e[0]}-{e[-1]}"


def _machine(group: dict) -> str:
    bf16 = {True: ", bf16", False: ", no bf16"}.get(group.get("bf16"), "")
    return f"{group.get('cores') or '?'}-core {group.get('machine')}{bf16}"


def _when(group: dict) -> str:
    return f"{str(group.get('date'))[:10]}, {', '.join(group.get('commits') or [])}"


def _config(name: str) -> dict:
    from cifarlab.training.recipes import recipe_config
    return recipe_config(name).to_dict()


def cpu_recipes(folder=None) -> str:
    """Each CPU recipe as its config is now: its latest measurement (results.recipe_figure)."""
    rows = results.read_rows("cpu_frontier", folder)
    out = []
    for name in CPU_RECIPES:
        g = results.recipe_figure(name, _config(name), folder)
        if g is None:
            out.append([f"`{name}`", "-", "never measured", "-", "-", "-", "-", "-"])
            continue
        members = _members(g, rows)
        out.append([f"`{name}`", f"{g['budget_s']:,.0f} s" if g.get("budget_s") else "-", f"**{_pct(g)}**",
                    _plain(members), _wall(g), f"{_epochs(members)} ({g['model']})", _machine(g), _when(g)])
    return _table(["recipe", "budget", "test top-1 (recipe's TTA)", "without TTA", "wall time", "epochs (model)",
                   "machine", "date, commit"], out)


def cpu_goals(folder=None) -> str:
    """Per CPU recipe: the goal, and the best measurement of it as its config is now on each machine."""
    rows = [r for r in results.read_rows("cpu_frontier", folder) if not r.get("train_subset")]
    out = []
    for name in CPU_RECIPES:
        cfg = _config(name)
        groups = [g for g in results.seed_groups([r for r in rows if r["recipe"] == name and results.matches(r, cfg)])
                  if g["n"] >= 3]
        best: dict[str, dict] = {}
        for g in groups:
            if g["machine"] not in best or g["test_top1_pct"] > best[g["machine"]]["test_top1_pct"]:
                best[g["machine"]] = g
        cells = [f"{_pct(g)} on the {g['machine']} ({_when(g)})"
                 for g in sorted(best.values(), key=lambda g: -g["test_top1_pct"])]
        top = max((g["test_top1_pct"] for g in best.values()), default=None)
        reached = "-" if top is None else ("yes" if top >= GOALS[name] else "no")
        out.append([f"`{name}`", f">= {GOALS[name]}%", "; ".join(cells) or "never measured", reached])
    return _table(["recipe", "goal", "best as the recipe is now, 3 seeds or more, per machine", "reached?"], out)


def cpu_probes(folder=None) -> str:
    """Every change tried on the CPU recipes (results/cpu_probes.csv), oldest first."""
    out = []
    for p in sorted(results.read_rows("cpu_probes", folder), key=lambda p: str(p["date"])):
        se = f" ± {p['difference_se']:.2f}" if p.get("difference_se") is not None else ""
        out.append([str(p["date"])[:10], f"`{p['recipe']}`", p["change"],
                    f"{p['variant_top1_pct']:.2f}% vs {p['baseline_top1_pct']:.2f}%",
                    f"{p['difference_points']:+.2f}{se}", str(p["seeds"]), p["paired"],
                    "yes" if p["adopted"] else "no"])
    return _table(["date", "recipe", "change", "test top-1, variant vs baseline", "points", "seeds", "compared on",
                   "adopted"], out)


def make_train(folder=None) -> str:
    """`make train` from a fresh clone: the whole command's time and what it printed, the
    newest row of each kind of machine (cores, CPU, bf16), oldest kind first; the earlier
    rows stay in results/make_train.csv."""
    newest: dict[str, dict] = {}
    for r in results.read_rows("make_train", folder):
        newest.pop(_machine(r), None)  # re-inserted: the kinds end up ordered by their newest row
        newest[_machine(r)] = r
    out = []
    for r in newest.values():
        minutes, seconds = divmod(float(r["elapsed_s"]), 60)
        model = f" ({r['model']})" if r.get("model") else ""
        out.append([str(r["date"])[:10], str(r["commit"]), _machine(r), f"{minutes:.0f} min {seconds:.0f} s" if float(r["elapsed_s"]).is_integer() else f"{minutes:.0f} min {seconds:04.1f} s",
                    f"{r['test_top1_pct']:.2f}%", f"{r['epochs']}{model}"])
    return _table(["date", "commit measured", "machine", "whole command", "test top-1 printed", "epochs (model)"],
                  out)


def shipped_models(folder=None) -> str:
    """The model files shipped in the package now, each with the measured test figures of its
    newest row (a file replaced or removed since keeps its rows in results/shipped_models.csv)."""
    newest: dict[str, dict] = {}
    for r in results.read_rows("shipped_models", folder):
        path = str(r["file"]).split(" (")[0]  # without a note such as "(replaced by ...)"
        if (ROOT / path).is_file():
            newest[path] = r
    out = []
    for path, r in sorted(newest.items(), key=lambda kv: (Path(kv[0]).stem != "default", kv[0])):
        top5 = f"{r['test_top5_pct']:.2f}%" if r.get("test_top5_pct") is not None else "-"
        out.append([str(r["date"])[:10], f"`{path}`", r["model"], r.get("weights") or "-",
                    f"{r['test_top1_pct']:.2f}%", top5, f"`{r['recipe']}`" if r.get("recipe") else "-",
                    _machine(r), str(r["commit"])])
    return _table(["date", "file", "model", "weights", "test top-1", "top-5", "recipe", "trained on", "commit"],
                  out)


_WRITE_UP_ORDER = ["lenet5", "alexnet", "vgg16_faithful", "googlenet_small", "resnet18"]  # then the others


def _budget(row: dict) -> str:
    return f"{row['budget_s'] / 60:g} min" if row.get("budget_s") else "planned epochs"


def _ref(fraction: float | None) -> str:
    return "-" if fraction is None else f"{100 * fraction:.1f}%"


def compare(folder=None) -> str:
    """Each model of each equal-time comparison (results/compare.csv; full data, whole test set):
    mean ± std over its seeds beside the write-up's figure. A run trained again keeps its last row."""
    from cifarlab.zoo import facts
    known = {f["name"]: f for f in facts()}
    latest: dict[str, dict] = {}
    for r in results.read_rows("compare", folder):
        trained = r.get("test_top1_pct") is not None or r.get("needs_s") is not None  # not a trust row
        if trained and not r.get("train_subset") and not r.get("test_subset") and r.get("run"):
            latest[r["run"]] = r
    out = []
    for g in sorted(results.seed_groups(list(latest.values()), ("model", "recipe", "budget_s", "machine")),
                    key=lambda g: (_WRITE_UP_ORDER.index(g["model"]) if g["model"] in _WRITE_UP_ORDER else 9,
                                   -g["test_top1_pct"])):
        members = [r for r in latest.values() if r["model"] == g["model"] and r["series"] == g["series"]]
        ref = (known.get(g["model"]) or {}).get("ref_accuracy")
        epochs = sorted(r["epochs"] for r in members if r.get("epochs") is not None)
        span = "-" if not epochs else f"{epochs[0]:g}" if epochs[0] == epochs[-1] else f"{epochs[0]:g}-{epochs[-1]:g}"
        out.append([g["model"], _budget(g),
                    f"**{_pct(g)}**", _ref(ref),
                    span, _machine(g), _when(g)])
    measured = {(r["model"], r["series"]) for r in latest.values() if r.get("test_top1_pct") is not None}
    refused: dict[tuple, dict] = {}
    for r in latest.values():  # a model its budget cannot hold here: what it would need
        if r.get("needs_s") is not None and (r["model"], r["series"]) not in measured:
            refused.setdefault((r["model"], r["series"]), r)
    for r in refused.values():
        ref = (known.get(r["model"]) or {}).get("ref_accuracy")
        out.append([r["model"], _budget(r),
                    f"does not fit: needs {r['needs_s'] / 60:.0f} min here", _ref(ref),
                    "0", _machine(r), f"{str(r.get('date'))[:10]}, {r.get('commit')}"])
    return _table(["model", "budget", "test top-1 (ours)", "write-up", "epochs done", "machine", "date, commit"], out)


def robustness(folder=None) -> str:
    """The shipped model files on corrupted copies of the test set (``cifarlab evaluate NAME
    --corruptions``, rows of results/corruptions.csv): for each file shipped now, matched by its
    SHA-256 (a row of a file since replaced is left out), the row of the most pictures
    classified, the newest of those (a quick ``--limit`` or one-kind run does not replace it)."""
    import hashlib
    assets = sorted((ROOT / "src" / "cifarlab" / "assets").glob("*.pt"), key=lambda f: (f.stem != "default", f.stem))
    shipped = {hashlib.sha256(f.read_bytes()).hexdigest(): f.stem for f in assets}
    def sets(r: dict) -> int:
        return len(str(r.get("kinds") or "").split()) * len(str(r.get("severities") or "").split())

    latest = {}
    for r in results.read_rows("corruptions", folder):
        sha = r.get("checkpoint_sha256")
        if sha in shipped and (sha not in latest or sets(r) * (r.get("n") or 0)
                               >= sets(latest[sha]) * (latest[sha].get("n") or 0)):
            latest[sha] = r
    order = list(shipped)
    out = []
    for sha, r in sorted(latest.items(), key=lambda kv: order.index(kv[0])):
        out.append([f"`{shipped[sha]}`", r["model"], f"{r['clean_top1_pct']:.2f}%", f"{r['mean_corruption_pct']:.2f}%",
                    f"{r['relative_drop_pct']:.1f}%", f"{sets(r)} x {r['n']:,}", r.get("precision") or "float32",
                    _machine(r),
                    f"{str(r.get('date'))[:10]}, {r.get('commit')}"])
    if not out:
        return "No shipped model measured yet (`cifarlab evaluate default --corruptions`).\n"
    return _table(["name", "model", "clean", "mean corrupted", "relative drop", "test sets x pictures", "precision",
                   "machine", "date, commit"], out)


TABLES = {"cpu-recipes": cpu_recipes, "cpu-goals": cpu_goals, "cpu-probes": cpu_probes, "make-train": make_train,
          "shipped-models": shipped_models, "compare": compare, "robustness": robustness}


ASSET = ROOT / "src" / "cifarlab" / "assets" / "measured.json"


def measured_asset(folder=None) -> str:
    """measured.json's text: for each kind a model card reads, the last row naming each shipped
    file by (a prefix of at least 12 hex digits of) its SHA-256, in the order of the files."""
    from cifarlab.modelcard import MEASURED_KINDS, _row_for  # the cards' own choice of row
    shas = [hashlib.sha256(f.read_bytes()).hexdigest() for f in sorted(ASSET.parent.glob("*.pt"))]
    out = {}
    for kind in MEASURED_KINDS:
        rows = results.read_rows(kind, folder)
        out[kind] = [r for r in (_row_for(rows, sha) for sha in shas) if r is not None]
    return json.dumps(out, indent=1, sort_keys=True) + "\n"


def render(text: str, folder=None) -> str:
    def one(m: re.Match) -> str:
        name = m.group(2)
        if name not in TABLES:
            raise SystemExit(f"gen_tables: unknown table {name!r} (known: {', '.join(TABLES)})")
        return m.group(1) + TABLES[name](folder) + m.group(4)
    return BLOCK.sub(one, text)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--check", action="store_true", help="change nothing; exit 1 if a block is stale")
    p.add_argument("--results", default=None, help="the results folder (default: $CIFARLAB_RESULTS or results/)")
    p.add_argument("files", nargs="*", type=Path, default=FILES)
    args = p.parse_args(argv)
    stale = []
    outputs = [(path, lambda text: render(text, args.results)) for path in args.files if path.exists()]
    if args.files == FILES:
        outputs.append((ASSET, lambda _: measured_asset(args.results)))
    for path, make in outputs:
        text = path.read_text() if path.exists() else ""
        new = make(text)
        if new != text:
            stale.append(path)
            if not args.check:
                path.write_text(new)
    if args.check and stale:
        names = ", ".join(str(p.relative_to(ROOT) if p.is_relative_to(ROOT) else p) for p in stale)
        print(f"gen_tables: stale generated tables in {names}; run `python scripts/gen_tables.py`")
        return 1
    for path in stale:
        print(f"rewrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
