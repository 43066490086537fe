"""Comments and docs cite only documents of this repository, and the sections they name exist."""

from __future__ import annotations

import re
import subprocess
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
