"""img2mesh.contract is the one home of the names, shapes, parameters and limits every part uses.

Checked here: the contract imports nothing but the standard library; no other source file spells one
of its model names, tensor names or limits out as a literal; and the tables of
docs/architecture.md say what the contract says.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

from img2mesh import contract

ROOT = Path(__file__).resolve().parents[1]
ARCHITECTURE = ROOT / "docs" / "architecture.md"
OWN_FILES = {Path("img2mesh/contract.py"), Path("tests/test_contract.py")}

MODEL_NAMES = (*contract.PYTHON_MODELS, *contract.ONNX_MODELS, *contract.ENSEMBLES)
# Tensor names distinctive enough to search for: the ONNX graphs' lower-case ones ("image",
# "points", "mask" …) are ordinary words, so they are checked through the tables below instead.
TENSOR_NAMES = (
    contract.IMAGE, contract.U2NET_INPUT, contract.MASK, contract.CONDITION, contract.MESHER_SCENE_CODES,
    contract.DECODER_VERSION, *contract.MESH_OUTPUTS, contract.WEIGHTS_VERSION, contract.PHOTO_MEASURES,
)
LIMITS = (contract.MAX_IMAGE_PIXELS, contract.DECODER_CHUNK_POINTS)


def source_files() -> list[Path]:
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "*.py", "*.sh"],
                            cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    return [Path(name) for name in listed if Path(name) not in OWN_FILES and (ROOT / name).is_file()]


def test_the_contract_imports_only_the_standard_library() -> None:
    tree = ast.parse((ROOT / "img2mesh" / "contract.py").read_text())
    imported = {
        (node.module if isinstance(node, ast.ImportFrom) else alias.name).split(".")[0]
        for node in ast.walk(tree) if isinstance(node, (ast.Import, ast.ImportFrom))
        for alias in node.names
    }
    assert imported <= set(sys.stdlib_module_names) | {"__future__"}, imported


def test_no_source_file_spells_out_a_name_or_limit_of_the_contract() -> None:
    patterns = {f"{name!r}": re.compile(rf"""(?<!\w)(["']){re.escape(name)}\1(?!\w)""") for name in (*MODEL_NAMES, *TENSOR_NAMES)}
    for limit in LIMITS:
        digits = str(limit)
        grouped = f"{limit:_}"
        patterns[digits] = re.compile(rf"(?<![\d_.]){digits}(?![\d_])|(?<![\d_.]){grouped}(?![\d_])")
    found = []
    for path in source_files():
        for number, line in enumerate((ROOT / path).read_text().splitlines(), 1):
            for what, pattern in patterns.items():
                if pattern.search(line):
                    found.append(f"{path}:{number}: {what}: {line.strip()}")
    assert not found, "use the img2mesh.contract constant instead:\n" + "\n".join(found)


def _dims(dims: tuple[int, ...]) -> str:
    return "[" + ",".join(str(d) for d in dims) + "]"


def _tensors(specs: tuple[contract.TensorSpec, ...]) -> str:
    return ", ".join(f"`{spec.name}` {spec.data_type} {_dims(spec.dims)}" for spec in specs)


def _table_rows(heading: str) -> dict[str, list[str]]:
    """The rows of the first table from ``heading`` on: first cell (without backticks) → cells."""
    text = ARCHITECTURE.read_text()
    rows: dict[str, list[str]] = {}
    for line in text[text.index(heading):].splitlines():
        if line.startswith("|"):
            if not line.startswith("|---"):
                cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
                rows[cells[0].strip("`")] = cells
        elif rows and len(rows) > 1:
            break
    return rows


def test_the_repository_table_lists_every_model_with_the_contracts_tensors() -> None:
    rows = _table_rows("## Triton repository")
    specs = contract.model_specs()
    assert set(specs) <= set(rows), f"models missing from the table: {set(specs) - set(rows)}"
    for name, spec in specs.items():
        assert rows[name][2] == _tensors(spec.inputs), f"{name} inputs"
        assert rows[name][3] == _tensors(spec.outputs), f"{name} outputs"
    assert f"`max_batch_size` {contract.MAX_BATCH_SIZE}" in ARCHITECTURE.read_text()


@pytest.mark.parametrize("parameter", contract.REQUEST_PARAMETERS, ids=lambda p: p.name)
def test_the_parameter_table_gives_the_contracts_default_and_range(parameter: contract.RequestParameter) -> None:
    row = _table_rows("| parameter |")[parameter.name]
    assert row[1:] == [parameter.kind.__name__, str(parameter.default), parameter.allowed()]


def test_the_limits_table_gives_the_contracts_values() -> None:
    rows = _table_rows("| limit |")
    assert rows["MAX_IMAGE_PIXELS"][1] == f"{contract.MAX_IMAGE_PIXELS:,}"
    assert rows["DECODER_CHUNK_POINTS"][1] == f"{contract.DECODER_CHUNK_POINTS:,}"
