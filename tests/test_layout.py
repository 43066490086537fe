"""Every first-party import follows the layout table of docs/architecture.md."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FIRST_PARTY = {"img2mesh", "asset", "triposr", "export", "local_triton", "client_worker", "bench"}


def layout() -> dict[str, list[str]]:
    """folder (as a dotted prefix) → the module prefixes it may import."""
    text = (ROOT / "docs" / "architecture.md").read_text()
    section = text[text.index("## Layout"):text.index("## Coordinates")]
    rules = {}
    for line in section.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) == 3 and cells[0].startswith("`") and cells[0].endswith("/`"):
            folder = cells[0].strip("`/").replace("/", ".")
            rules[folder] = re.findall(r"`([\w.]+)`", cells[2])
    return rules


def owner(module: str, rules: dict[str, list[str]]) -> str | None:
    """The most specific folder of the table that holds ``module``."""
    candidates = [folder for folder in rules if module == folder or module.startswith(folder + ".")]
    return max(candidates, key=len, default=None)


def first_party_imports(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append(node.module)
    return [name for name in found if name.split(".")[0] in FIRST_PARTY]


def test_the_table_covers_every_package() -> None:
    rules = layout()
    packages = {path.parent.relative_to(ROOT).as_posix().replace("/", ".") for path in ROOT.glob("*/**/__init__.py")
                if path.parent.relative_to(ROOT).parts[0] in FIRST_PARTY}
    assert {package for package in packages if owner(package, rules) is None} == set()
    assert "model_repository" in rules


def test_every_import_is_allowed_by_the_table() -> None:
    rules = layout()
    problems = []
    files = [path for top in (*FIRST_PARTY, "model_repository") for path in (ROOT / top).rglob("*.py")]
    for path in files:
        relative = path.relative_to(ROOT)
        module = ".".join(relative.with_suffix("").parts)
        folder = owner(module, rules)
        assert folder is not None, f"{relative} is in no folder of the layout table"
        for imported in first_party_imports(path):
            if not any(imported == allowed or imported.startswith(allowed + ".") for allowed in rules[folder]):
                problems.append(f"{relative} imports {imported}, which `{folder}/` may not import")
    assert not problems, "\n".join(problems)


SOURCE_NEUTRAL = [ROOT / "client_worker" / "processing.py", ROOT / "client_worker" / "asset_cache.py",
                  *(ROOT / "client_worker" / "pipeline").rglob("*.py")]
JOB_SOURCE = ("redis", "client_worker.jobs.queue", "client_worker.jobs.keys", "client_worker.status",
              "client_worker.attempt_records", "client_worker.redis_asset_cache", "client_worker.consumer",
              "client_worker.worker")


def test_processing_and_the_pipeline_know_no_job_source() -> None:
    """They serve any source of jobs (docs/architecture.md): no Redis, queue, status store or consumer."""
    problems = []
    for path in SOURCE_NEUTRAL:
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([alias.name for alias in node.names] if isinstance(node, ast.Import)
                     else [node.module] if isinstance(node, ast.ImportFrom) and node.module else [])
            problems += [f"{path.relative_to(ROOT)} imports {name}" for name in names
                         if any(name == source or name.startswith(source + ".") for source in JOB_SOURCE)]
    assert not problems, "\n".join(problems)
