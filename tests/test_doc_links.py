"""The docs stand on their own: every relative link and image in README.md and docs/*.md
names a file in the repository, and docs/architecture.md (the design) points at no file
outside it."""
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def links(page: Path):
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)    # not in code blocks
    for m in LINK.finditer(text):
        target = m.group(1)
        if re.match(r"[a-z]+:", target) or target.startswith("#"):
            continue                                   # a URL, or an anchor on the page
        yield m.group(0), target.split("#")[0]


def test_every_relative_link_names_a_file_in_the_repository():
    missing = [f"{p.relative_to(ROOT)}: {text}" for p in PAGES for text, target in links(p)
               if not (p.parent / target).resolve().exists()
               or ROOT not in (p.parent / target).resolve().parents]
    assert not missing, missing
    assert any(True for p in PAGES for _ in links(p))    # the pattern finds links at all


def test_architecture_is_self_contained():
    text = (ROOT / "docs" / "architecture.md").read_text()
    assert "This page is the whole design" in text
    # no link out of the repository's docs and code, no absolute or home path
    for _, target in links(ROOT / "docs" / "architecture.md"):
        assert not target.startswith(("/", "~", "../..")), target
    assert not re.search(r"(?<![\w.])(?:/home/|/root/|~/)\S+\.md", text)
