"""The README and docs/ say what is true: every flag they give a command exists in that
command's parser, every file the code map names exists, every link resolves."""
import argparse
import importlib
import re
import shlex
from pathlib import Path

import pytest

from .conftest import ROOT

PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# Flags of other programs the pages show (torchrun, tensorboard, pip, trackio) and the
# placeholder the error messages page uses.
FOREIGN_FLAGS = {"--nproc_per_node", "--nnodes", "--logdir", "--no-deps", "--project",
                 "--flag", "--help",
                 "--array", "--sweep_dir"}  # sbatch's; launch/slurm.sbatch's (a shell script)
FOREIGN_MODULES = {"pytest", "bleurt.score_files"}  # other programs' commands the pages show


class Parsed(Exception):
    def __init__(self, parser):
        self.parser = parser


def parser_of(module_name, monkeypatch):
    """The argparse parser a command builds: its main() runs until it parses, and stops."""
    def capture(parser, *args, **kwargs):
        raise Parsed(parser)
    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", capture)
    module = importlib.import_module(module_name)
    if hasattr(module, "__path__"):  # python -m package runs its __main__
        module = importlib.import_module(f"{module_name}.__main__")
    try:
        module.main([])
    except Parsed as parsed:
        return parsed.parser
    raise AssertionError(f"{module_name}.main() parsed no arguments")


def options(parser):
    return {option for action in parser._actions for option in action.option_strings}


def code_blocks(text):
    return re.findall(r"```(?:bash|sh)?\n(.*?)```", text, flags=re.S)


def commands(block):
    """(module, [flags]) of every toolkit command in a shell block: `python script.py ...`,
    `python -m package.module ...`, under torchrun too; comments and continuations handled."""
    joined = re.sub(r"\\\n\s*", " ", block)
    for line in joined.splitlines():
        for part in re.split(r"&&|;|\|", line.split("#")[0]):
            try:
                words = shlex.split(part)
            except ValueError:  # a block showing output, with a lone quote
                words = part.split()
            starts = [i for i, w in enumerate(words) if w in ("python", "python3", "torchrun")]
            if not starts:
                continue
            rest = [w for w in words[starts[0] + 1:]]
            while rest and rest[0].startswith("--"):  # torchrun's own options
                rest = rest[1:]
            if rest[:1] == ["-m"] and len(rest) > 1:
                module, flags = rest[1], rest[2:]
            elif rest and rest[0].endswith(".py"):
                module, flags = Path(rest[0]).stem, rest[1:]
            else:
                continue
            if module not in FOREIGN_MODULES:
                yield module, [w.split("=")[0] for w in flags if w.startswith("--")]


def test_every_flag_a_page_gives_a_command_exists_in_its_parser(monkeypatch):
    parsers, known = {}, set(FOREIGN_FLAGS)
    for page in PAGES:
        for block in code_blocks(page.read_text()):
            for module, flags in commands(block):
                if module not in parsers:
                    parsers[module] = options(parser_of(module, monkeypatch))
                    known |= parsers[module]
                missing = set(flags) - parsers[module]
                assert not missing, f"{page.name}: {module} has no {sorted(missing)}"
    assert {"train_sonar_with_t5", "validate_perceiver_model", "plot_training_curves",
            "test_perceiver_architecture", "sonar_t5.data.encoder_cache"} <= set(parsers)
    for page in PAGES:  # commands named in prose count too
        for script, module in re.findall(r"python (\w+)\.py|python -m ([\w.]+)", page.read_text()):
            name = script or module
            if name not in parsers and name not in FOREIGN_MODULES:
                parsers[name] = options(parser_of(name, monkeypatch))
                known |= parsers[name]
    for page in PAGES:  # flags named in prose and tables: some command has each
        prose = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
        named = set(re.findall(r"(?<![\w-])--[a-z][a-z0-9_-]*", prose))
        assert named <= known, f"{page.name} names {sorted(named - known)}"


def test_every_path_in_the_code_map_exists():
    readme = (ROOT / "README.md").read_text()
    code_map = readme.split("## Code map", 1)[1].split("\n## ", 1)[0]
    paths = {p for p in re.findall(r"`([\w./]+)`", code_map) if "/" in p}
    assert len(paths) > 20
    assert not [p for p in paths if not (ROOT / p).exists()]


def anchors(page):
    """GitHub's anchors for a page's headings."""
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-")
            for h in re.findall(r"^#+ (.+)$", text, flags=re.M)}


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_link_resolves(page):
    for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
        if target.startswith(("http://", "https://")):
            continue
        path, _, anchor = target.partition("#")
        linked = (page.parent / path).resolve() if path else page
        assert linked.exists(), f"{page.name}: {target} does not exist"
        if anchor:
            assert anchor in anchors(linked), f"{page.name}: no heading for {target}"


def test_the_readme_is_a_front_door():
    assert len((ROOT / "README.md").read_text().splitlines()) <= 250
