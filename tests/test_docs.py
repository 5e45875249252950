"""The docs a newcomer reads first stay true to the code: the module map names every module that exists and
only modules that exist, and the README stays a short guide."""
import re

from omni_core.config import REPO_ROOT

PKG = REPO_ROOT / "omni_core"
ARCHITECTURE = REPO_ROOT / "docs" / "architecture.md"


def module_map() -> set[str]:
    """Module paths (relative to omni_core/) in the module map's tables: `omni_core/x.py` rows of the top
    level, `x.py` / `sub/x.py` rows under a `### omni_core/<package>/` heading; a `sub/` row stands for
    every module of that subpackage."""
    names, package = set(), ""
    for line in ARCHITECTURE.read_text().splitlines():
        heading = re.match(r"### `omni_core/(\w+)/`", line)
        if heading:
            package = heading.group(1) + "/"
        elif line.startswith("## ") and package:
            package = ""
        folder = re.match(r"\| `(\w+)/` \|", line)
        if folder:
            names |= {str(p.relative_to(PKG)) for p in (PKG / package / folder.group(1)).glob("*.py")}
        row = re.match(r"\| `([\w/]+\.py)` \|", line)
        if row:
            path = row.group(1)
            names.add(path.removeprefix("omni_core/") if path.startswith("omni_core/") else package + path)
    return names


def test_module_map_matches_the_package():
    def modules(paths):         # a subpackage's __init__.py may or may not have a row of its own
        return {p for p in paths if not p.endswith("/__init__.py")}

    on_disk = modules(str(p.relative_to(PKG)) for p in PKG.rglob("*.py"))
    documented = modules(module_map())
    assert not on_disk - documented, f"docs/architecture.md's module map lacks {sorted(on_disk - documented)}"
    assert not documented - on_disk, f"docs/architecture.md names modules that do not exist: {sorted(documented - on_disk)}"


def test_readme_is_a_short_guide():
    assert len((REPO_ROOT / "README.md").read_text().splitlines()) <= 300
