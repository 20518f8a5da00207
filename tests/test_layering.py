"""Imports run one way: common <- models, data <- evaluation <- training <- launch, scripts.

Every import statement counts, function-level ones too (ast.walk sees them all).
"""
import ast

from .conftest import ROOT

# A package may import its own modules and those of lower layers; models and data are side
# by side and import neither each other; so are launch (the sweep, which runs the scripts as
# processes) and the scripts. The benchmarks sit on top.
LAYERS = {"common": 0, "models": 1, "data": 1, "evaluation": 2, "training": 3,
          "launch": 4, "scripts": 4, "benchmarks": 5}
SCRIPTS = ("train_sonar_with_t5", "validate_perceiver_model", "plot_training_curves",
           "test_perceiver_architecture")


LIBRARY = "sonar_t5"  # the installed package: the layers below launch live in it
OUTSIDE_LIBRARY = ("launch", "benchmarks")  # top-level folders run from the checkout


def package_of(module):
    top = module.removeprefix(LIBRARY + ".").split(".")[0]
    return "scripts" if top in SCRIPTS else top


def project_imports(root, path, module):
    """The project modules one file imports (`pkg` for pkg/__init__.py), relative imports
    resolved."""
    tree = ast.parse(path.read_text(), filename=str(path))
    is_package = path.name == "__init__.py"
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = module.split(".")
                anchor = parts[:len(parts) - node.level + is_package]
                base = ".".join(anchor + ([base] if base else []))
            # `from pkg import module` names a module; `from module import name` does not.
            names = [f"{base}.{a.name}" if (root / base.replace(".", "/") / f"{a.name}.py")
                     .is_file() else base for a in node.names]
        else:
            continue
        found |= {n for n in names if package_of(n) in LAYERS}
    return found


def import_graph(root):
    graph = {}
    for package in LAYERS:
        name = package if package in OUTSIDE_LIBRARY else f"{LIBRARY}.{package}"
        folder = root / name.replace(".", "/")
        for path in sorted(folder.glob("**/*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            module = ".".join(parts[:-1] if path.stem == "__init__" else parts)
            graph[module] = project_imports(root, path, module)
    for script in SCRIPTS:
        if (root / f"{script}.py").is_file():
            graph[script] = project_imports(root, root / f"{script}.py", script)
    return graph


def upward_imports(graph):
    return [f"{module} imports {target}" for module, targets in graph.items()
            for target in sorted(targets) if package_of(target) != package_of(module)
            and LAYERS[package_of(target)] >= LAYERS[package_of(module)]]


def import_cycles(graph):
    cycles, state = [], {}

    def visit(module, path):
        state[module] = "open"
        for target in sorted(graph[module] & graph.keys()):
            if state.get(target) == "open":
                cycles.append(" -> ".join(path[path.index(target):] + [target]))
            elif target not in state:
                visit(target, path + [target])
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    return cycles


def test_imports_only_run_downward():
    assert not upward_imports(import_graph(ROOT))


def test_no_import_cycles():
    assert not import_cycles(import_graph(ROOT))


def test_the_checks_find_a_function_level_upward_import_and_a_cycle(tmp_path):
    library = tmp_path / LIBRARY
    for package in ("common", "models", "training"):
        (library / package).mkdir(parents=True)
    (library / "training" / "engine.py").write_text("")
    (library / "common" / "a.py").write_text("def f():\n    from sonar_t5.training import "
                                             "engine\n")
    (library / "models" / "b.py").write_text("from .c import x\n")
    (library / "models" / "c.py").write_text("def g():\n    from sonar_t5.models.b import y\n")
    graph = import_graph(tmp_path)
    assert upward_imports(graph) == ["sonar_t5.common.a imports sonar_t5.training.engine"]
    assert import_cycles(graph) == ["sonar_t5.models.b -> sonar_t5.models.c -> sonar_t5.models.b"]


# Where the whole parsed flags may go: parsing and checking them, resolving their defaults,
# comparing a --resume's with the run's, recording them (config.json), and the views' own
# from_args. Every other function takes a frozen view (common/flag_views.py) or its values.
TAKES_EVERY_FLAG = {"check_flag_ranges", "check_args", "fill_defaults", "choose_vocab_size",
                    "choose_warmup_steps", "set_accumulation", "check_resume", "new_decoder",
                    "run_config", "from_args", "given_in"}


def test_functions_take_the_flags_they_read_not_the_whole_namespace():
    takers = []
    for path in sorted((ROOT / "sonar_t5").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef) and "args" in [a.arg for a in node.args.args]:
                takers.append(node.name)
    assert set(takers) <= TAKES_EVERY_FLAG, sorted(set(takers) - TAKES_EVERY_FLAG)
    assert {"check_resume", "from_args"} <= set(takers)  # the walk finds them
