"""The package's shape: what `import metaqap_hf` loads, and which rooms may import which (data flows one way)."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "metaqap_hf"
# The core files and what they must never import: the model knows nothing of training, data, the hub or the CLI.
CORE = ("configuration_metaqap", "modeling_metaqap", "image_processing_metaqap", "image_utils", "pipeline_image_quality",
        "losses", "deprecation")
NOT_FOR_CORE = ("training", "pretraining", "data", "hub", "scoring", "evaluation", "factory", "weights", "files")


def _imports(path: Path) -> set[str]:
    """Modules `path` imports, package-relative imports resolved to `metaqap_hf.<...>`."""
    found = set()
    package = ".".join(("metaqap_hf", *path.relative_to(PACKAGE).parent.parts))
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                found.add(f"{base}.{node.module}" if node.module else base)
            else:
                found.add(node.module)
    return found


def test_import_stays_free_of_training_data_and_hub_code():
    script = "import sys, metaqap_hf; print(sorted(sys.modules))"
    loaded = eval(subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout)
    heavy = {"datasets", "metaqap_hf.training", "metaqap_hf.data", "metaqap_hf.hub", "metaqap_hf.pretraining",
             "metaqap_cli", "matplotlib"}
    assert not heavy & set(loaded)


@pytest.mark.parametrize("module", CORE)
def test_core_files_import_no_outer_room(module):
    imported = _imports(PACKAGE / f"{module}.py")
    outer = {name for name in imported for room in NOT_FOR_CORE if name.startswith(f"metaqap_hf.{room}")}
    assert not outer, f"{module} imports {sorted(outer)}"


def test_nothing_in_the_library_imports_the_command_line():
    for path in PACKAGE.rglob("*.py"):
        if path.name == "__main__.py":  # `python -m metaqap_hf` is the command line
            continue
        assert not any(name.startswith("metaqap_cli") for name in _imports(path)), path


def test_no_two_rooms_import_each_other():
    rooms = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE).parts
        room = parts[0].removesuffix(".py")
        rooms.setdefault(room, set()).update(
            name.split(".")[1] for name in _imports(path) if name.startswith("metaqap_hf.") and name.count(".") >= 1)
    for room, imported in rooms.items():
        for other in imported - {room}:
            assert room not in rooms.get(other, set()), f"{room} and {other} import each other"


def test_no_module_imports_names_from_the_package_root():
    """`metaqap_hf/__init__.py` sits on the top floor: a module below may import sibling modules through it
    (`from .. import devices`), never the names it defines (the default model's path has its own module)."""
    for path in PACKAGE.rglob("*.py"):
        if path.name == "__init__.py" and path.parent == PACKAGE:
            continue
        package = ".".join(("metaqap_hf", *path.relative_to(PACKAGE).parent.parts))
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level and not node.module:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                if base == "metaqap_hf":
                    for alias in node.names:
                        assert (PACKAGE / f"{alias.name}.py").is_file() or (PACKAGE / alias.name).is_dir(), (
                            f"{path} imports {alias.name} from the package root")


def test_the_change_list_is_this_versions():
    import metaqap_hf

    major_minor = ".".join(metaqap_hf.__version__.split(".")[:2])
    readme = (PACKAGE.parents[1] / "README.md").read_text()
    assert f"## Changes in {major_minor} " in readme
