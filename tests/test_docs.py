"""Comments and docs cite only documents of this repository, and the sections they name exist."""

from __future__ import annotations

import re
import subprocess
from dataclasses import fields
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CITATION = re.compile(r"(docs/[\w./-]+\.md)(?:,\s*\"([^\"]+)\")?")
ELSEWHERE = re.compile(r"worker-facts|triposr-facts|triton-facts|shared/docs|DEVELOPERS\.md")


def tracked(*patterns: str) -> list[Path]:
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", *patterns],
                            cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    return [ROOT / name for name in listed if (ROOT / name).is_file()]


def headings(document: Path) -> set[str]:
    return {line.lstrip("#").strip() for line in document.read_text().splitlines() if line.startswith("#")}


def test_every_cited_document_and_section_exists() -> None:
    problems = []
    for path in tracked("*.py", "*.sh", "*.yml", "*.yaml", "*.md", "*Dockerfile", "*.pbtxt"):
        relative = path.relative_to(ROOT)
        if relative == Path(__file__).relative_to(ROOT):
            continue
        text = path.read_text()
        for match in ELSEWHERE.finditer(text):
            problems.append(f"{relative}: cites {match.group(0)}, which is not in this repository")
        for match in CITATION.finditer(text):
            document, section = ROOT / match.group(1), match.group(2)
            if not document.is_file():
                problems.append(f"{relative}: cites {match.group(1)}, which does not exist")
            elif section and section not in headings(document):
                problems.append(f"{relative}: cites section {section!r} of {match.group(1)}, which has no such heading")
    assert not problems, "\n".join(problems)


def _table(document: Path, header: str) -> dict[str, list[str]]:
    """The rows of the table whose header row starts with ``header``: first cell (no backticks) → cells."""
    lines = document.read_text().splitlines()
    start = next(index for index, line in enumerate(lines) if line.startswith(header))
    rows = {}
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        rows[cells[0].strip("`")] = cells
    return rows


def test_the_photo_check_doc_lists_exactly_the_codes_and_thresholds_of_the_module() -> None:
    from img2mesh import photo_measures as pm

    document = ROOT / "docs" / "photo-check.md"
    assert tuple(_table(document, "| code |")) == pm.PROBLEM_CODES
    measures = _table(document, "| measure |")
    thresholds = {
        "foreground_share": (pm.MIN_FOREGROUND_SHARE, pm.NO_OBJECT),
        "cut_off_sides": (f"{pm.CUT_OFF_MIN_EDGE_SHARE:.0%}", pm.CUT_OFF),
        "object_count`, `second_object_ratio": (pm.SECOND_OBJECT_MIN_RATIO, pm.SEVERAL_OBJECTS),
        "object_side_px": (pm.MIN_OBJECT_SIDE_PX, pm.TOO_SMALL),
        "undecided_share": (pm.MAX_UNDECIDED_SHARE, pm.UNCERTAIN_MASK),
    }
    assert set(measures) == set(thresholds)
    for measure, (value, code) in thresholds.items():
        threshold = measures[measure][2].replace(" %", "%")
        assert str(value) in threshold and f"`{code}`" in threshold, (measure, threshold)
    undecided = measures["undecided_share"][1]
    assert f"between {pm.UNDECIDED_LOW} and {pm.UNDECIDED_HIGH}" in undecided


def test_the_quality_check_doc_lists_exactly_the_codes_and_thresholds_of_the_module() -> None:
    from asset.mesh_health import LOOSE_PART_SHARE
    from client_worker.pipeline import quality_check as qc

    document = ROOT / "docs" / "quality-check.md"
    assert tuple(_table(document, "| code |")) == qc.PROBLEM_CODES
    thresholds = {
        "silhouette_iou": ((qc.MIN_SILHOUETTE_IOU,), (qc.OUTLINE,)),
        "mirrored_iou`, `flipped_iou": ((qc.MIN_SILHOUETTE_IOU, qc.ORIENTATION_MARGIN), (qc.MIRRORED, qc.UPSIDE_DOWN)),
        "colour_difference": ((qc.MAX_COLOUR_DIFFERENCE,), (qc.COLOURS,)),
        "loose_parts`, `loose_share": ((qc.MAX_LOOSE_PARTS, qc.MAX_LOOSE_SHARE), (qc.LOOSE_PARTS,)),
        "open_edges": ((qc.MAX_OPEN_EDGES,), (qc.HOLES,)),
    }
    rows = _table(document, "| measure | threshold |")
    assert set(rows) == set(thresholds)
    for measure, (values, codes) in thresholds.items():
        threshold, problem = rows[measure][1], rows[measure][2]
        assert all(f"{value:g}" in threshold for value in values), (measure, threshold)
        assert all(f"`{code}`" in problem for code in codes), (measure, problem)
    described = _table(ROOT / "docs" / "webhooks.md", "| measure | what it is | range |")
    listed = {name for row in described for name in row.split("`, `")}
    assert listed == {field.name for field in fields(qc.QualityMeasures)}
    assert f"{LOOSE_PART_SHARE:.0%}".replace("%", " %") in described["loose_parts"][1]
