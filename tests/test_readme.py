"""The README's commands run as written, and its JSON examples are what the server returns.

Every `cifarlab ...` line of the README parses with the real command line. The commands in
blocks marked ```sh runnable run verbatim in a scratch folder holding docs/examples/, with
tiny settings appended where a flag allows (training, summary memory); long-running ones
(`serve`, the 5-minute `train`, a full-test-set `evaluate`) are parsed only. Each
``<!-- readme-example: METHOD PATH ... -->`` JSON block is compared with the web API's answer:
every key it shows exists, and every value it shows is equal (floats to the decimals shown).
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
from pathlib import Path

import pytest

from cifarlab.cli import build_parser, main

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")

# long-running or full-data commands: parsed, not run
PARSE_ONLY = {"cifarlab serve", "cifarlab train", "cifarlab train --recipe cpu-2min", "cifarlab evaluate default --tta flip"}
# what a command gets appended to run in seconds (later flags win)
TINY = {
    "cifarlab summary": ["--no-memory"],
    "cifarlab train --model resnet20 --epochs 3": ["--epochs", "1", "--train-subset", "64", "--test-subset", "32",
                                                   "--val", "32", "--batch-size", "32", "--no-progress"],
}


def _commands(text: str, runnable_only: bool) -> list[str]:
    """`cifarlab ...` commands of fenced ```sh blocks (runnable ones only, or all) and of
    indented code lines (when not runnable_only), without comments or continuation lines."""
    out = []
    for info, body in re.findall(r"```(sh[^\n]*)\n(.*?)```", text, re.S):
        if runnable_only and "runnable" not in info:
            continue
        out += [line for line in body.splitlines()]
    if not runnable_only:
        out += [line[4:] for line in text.splitlines() if line.startswith("    cifarlab ")]
    commands = []
    for line in out:
        line = line.split("  #")[0].split(" # ")[0].strip()
        if line.startswith("cifarlab ") and not line.endswith("\\"):
            commands.append(line)
    return commands


def _tiny(cmd: str) -> list[str]:
    args = shlex.split(cmd)[1:]
    for prefix, extra in TINY.items():
        if cmd.startswith(prefix):
            args += extra
    return args


def test_every_command_in_the_readme_parses():
    commands = _commands(README, runnable_only=False)
    assert len(commands) > 20
    parser = build_parser()
    for cmd in commands:
        try:
            parser.parse_args(shlex.split(cmd)[1:])
        except SystemExit as exc:  # argparse: a flag or command the CLI does not have
            pytest.fail(f"README command does not parse ({exc.code}): {cmd}")


def test_the_quickstart_is_three_commands_first():
    head = README.split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    assert _commands(head, runnable_only=True) == ["cifarlab predict default docs/examples/cat.jpg",
                                                   "cifarlab serve", "cifarlab train"]
    assert README.index("make train") < README.index("make test") < README.index("## Quickstart")


@pytest.fixture()
def scratch(tmp_path, monkeypatch):
    """A folder with docs/examples/ and a small synthetic data set in CIFARLAB_DATA."""
    from cifarlab.data.synthetic import write_cifar10_python
    shutil.copytree(ROOT / "docs" / "examples", tmp_path / "docs" / "examples")
    data = write_cifar10_python(tmp_path / "data", per_batch=40, n_test=40).path
    monkeypatch.setenv("CIFARLAB_DATA", str(data))
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.slow
def test_runnable_commands_run(scratch, capsys):
    ran = []
    for cmd in _commands(README, runnable_only=True):
        if cmd in PARSE_ONLY:
            continue
        code = main(_tiny(cmd))
        out, err = capsys.readouterr()
        assert code == 0, f"{cmd}: exit {code}: {err.strip()[-300:]}"
        ran.append(cmd)
        if cmd.startswith("cifarlab predict default docs/examples/cat.jpg"):
            assert out.startswith("docs/examples/cat.jpg: cat "), out
        if cmd.startswith("cifarlab train --model"):
            assert out.strip().splitlines()[-1].startswith("Trained resnet20 for 1 epoch in ")
    assert (scratch / "resnet18.svg").is_file() and (scratch / "predictions.csv").is_file()
    assert len(ran) >= 8


@pytest.mark.slow
def test_the_python_example_runs(scratch, capsys):
    code = re.search(r"From Python:\n\n```python\n(.*?)```", README, re.S).group(1)
    exec(compile(code, "README.md", "exec"), {})
    printed = capsys.readouterr().out.split()
    assert 0 <= float(printed[-2]) <= 1 and printed[-1] == "cat"


def _same(example, real, where="") -> None:
    """Every key the example shows exists in ``real``; every value it shows is equal
    (floats to the decimals written); an empty {} or [] stands for any value."""
    if isinstance(example, dict):
        assert isinstance(real, dict), where
        for key, value in example.items():
            assert key in real, f"{where}.{key} is not in the server's answer"
            _same(value, real[key], f"{where}.{key}")
    elif isinstance(example, list):
        assert isinstance(real, list), where
        for i, value in enumerate(example):
            assert i < len(real), f"{where}[{i}] missing"
            _same(value, real[i], f"{where}[{i}]")
    elif isinstance(example, float):
        decimals = len(repr(example).split(".")[1]) if "." in repr(example) else 0
        assert round(real, decimals) == example, f"{where}: README {example}, server {real}"
    else:
        assert real == example, f"{where}: README {example!r}, server {real!r}"


def test_json_examples_match_the_server(tmp_path, monkeypatch):
    from conftest import need_module
    need_module("fastapi", "the web extra is not installed")
    from fastapi.testclient import TestClient

    from cifarlab.catalog import Catalog
    from cifarlab.web import create_app
    examples = re.findall(r"<!-- readme-example: (.*?) -->\n```json\n(.*?)```", README, re.S)
    assert len(examples) >= 2
    monkeypatch.setenv("CIFARLAB_HOME", str(tmp_path))
    with TestClient(create_app(Catalog(runs=False))) as client:
        for spec, body in examples:
            method, path, *rest = spec.split()
            if method == "GET":
                real = client.get(path).json()
            else:
                picture = ROOT / rest[0]
                form = dict(item.split("=", 1) for item in rest[1:])
                real = client.post(path, files=[("file", (picture.name, picture.read_bytes(), "image/jpeg"))],
                                   data=form).json()
            _same(json.loads(body), real, spec)


def test_every_relative_link_of_the_readme_leads_to_a_file():
    """A README link into docs/ (a published report, a page) that leads nowhere is caught here."""
    links = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", README)
    local = [link for link in links if not re.match(r"[a-z]+:", link)]
    assert local, "the README links no file of the checkout"
    missing = [link for link in local if not (ROOT / link).exists()]
    assert not missing, f"README links to missing files: {missing}"
