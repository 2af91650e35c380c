"""The folders read as the data flow: a stage imports only the stages below it, there is no import cycle, and each
concept that crosses stages has one home (``docs/architecture.md``)."""

from __future__ import annotations

import ast
import re
from collections import defaultdict
from pathlib import Path

from tests.conftest import REPO_ROOT

#: packages from the bottom of the data flow to the top; a package may import only those of a lower rank
RANKS = {"utils": 0, "model": 1, "preprocess": 2, "training": 3, "inference": 3, "eval.query": 4,
         "eval.protocol": 5, "langvggt4d": 5, "viewer": 6, "scripts": 7, "benchmarks": 7, "train": 7}
#: the one allowed upward import: ``python -m inference.view`` (the entry point issue 13 names) is a launcher of
#: a few lines for the viewer, which sits above the query code it reuses
ALLOWED_UP = {("inference/view.py", "viewer")}
SOURCE_DIRS = ("utils", "model", "preprocess", "training", "inference", "eval", "langvggt4d", "viewer", "scripts",
               "benchmarks")


def _sources() -> list[Path]:
    files = [REPO_ROOT / "train.py"]
    for d in SOURCE_DIRS:
        files += sorted((REPO_ROOT / d).rglob("*.py"))
    return files


def _module(path: Path) -> str:
    rel = path.relative_to(REPO_ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
            names += [f"{node.module}.{a.name}" for a in node.names]
    return names


def _stage(dotted: str) -> str:
    """The stage a module belongs to: its top package, or for eval its query / protocol half (the command
    module ``eval.evaluate`` is the protocol's)."""
    parts = dotted.split(".")
    if parts[0] == "eval" and len(parts) > 1:
        return "eval.query" if parts[1] == "query" else "eval.protocol"
    return parts[0]


def test_each_stage_imports_only_the_stages_below_it():
    bad = []
    for f in _sources():
        src = _stage(_module(f))
        for name in _imports(f):
            top = _stage(name)
            if top not in RANKS or top == src:
                continue
            rel = str(f.relative_to(REPO_ROOT))
            if src in RANKS and RANKS[top] >= RANKS[src] and (rel, top) not in ALLOWED_UP:
                bad.append(f"{rel} imports {name}")
    assert not bad, "imports against the data flow:\n" + "\n".join(sorted(set(bad)))


def test_no_import_cycle_between_modules():
    files = {_module(f): f for f in _sources()}
    graph: dict[str, set[str]] = defaultdict(set)
    for mod, f in files.items():
        for name in _imports(f):
            # the longest known module the import names (``a.b.c`` may be module a.b with attribute c)
            parts = name.split(".")
            for k in range(len(parts), 0, -1):
                cand = ".".join(parts[:k])
                if cand in files and cand != mod:
                    graph[mod].add(cand)
                    break
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                return stack[stack.index(n):] + [n]
            if n not in state and (cycle := visit(n)):
                return cycle
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(files):
        if m not in state and (cycle := visit(m)):
            raise AssertionError("import cycle: " + " -> ".join(cycle))


def _definitions(pattern: str) -> list[str]:
    rx = re.compile(pattern, re.M)
    return sorted(str(f.relative_to(REPO_ROOT)) for f in _sources() if rx.search(f.read_text()))


def test_each_concept_that_crosses_stages_has_one_home():
    homes = {
        r'^LEVELS\b.*=\s*\("small", "middle", "large"\)': ["model/levels.py"],
        r"^class CropInfo\b": ["preprocess/crop.py"],
        r"^def frame_index_from_file_name\b": ["preprocess/annotations.py"],
        r"^def key_to_index\b": ["preprocess/annotations.py"],
        r"^def load_coco_masks\b": ["preprocess/annotations.py"],
        r"^def load_video_annotations\b": ["preprocess/annotations.py"],
        r"^def discover_jobs\b": ["preprocess/layout.py"],
        r"^def write_token_file\b": ["preprocess/token_cache.py"],
        r"^LEVELS\b[^=\n]*=": ["model/levels.py"],  # one LEVELS: the target file's planes are PLANES
        r"^def target_problems\b": ["preprocess/target_format.py"],
        r"^def (seg|feat)_name\b": ["preprocess/target_format.py"],
        r"^def (write|read)_fields\b": ["inference/outputs.py"],
        r"^def (write|read)_depth\b": ["preprocess/geometry_files.py"],
        r"^def camera_record\b": ["preprocess/geometry_files.py"],
        r"^def load_backbone\b": ["model/backbones.py"],
        r"^def load_decoder\b": ["model/decoder_io.py"],
        r"^def resolve_checkpoint\b": ["model/streamvggt/loading.py"],
        r"^def build_text_encoder\b": ["model/text.py"],
        r"^def setup_logging\b": ["utils/cli.py"],
    }
    found = {p: _definitions(p) for p in homes}
    assert found == homes


def test_no_command_line_parsing_in_model():
    offenders = _definitions(r"ArgumentParser\(|add_argument\(")
    assert not [f for f in offenders if f.startswith("model/")], offenders


#: the library packages (commands' helpers in scripts/ and benchmarks/ may write fixtures their own way)
LIBRARY_DIRS = ("utils", "model", "preprocess", "training", "inference", "eval", "langvggt4d", "viewer")
TARGET_SUFFIXES = ("_s.npy", "_f.npy")


def _builds_target_name(node: ast.AST) -> bool:
    """An f-string whose formatted value is followed by ``_s.npy`` / ``_f.npy`` (``f"{key}_s.npy"``), or a string
    that is the suffix or its glob (``"_f.npy"``, ``"*_s.npy"``): the ways a module names target files itself."""
    if isinstance(node, ast.JoinedStr):
        parts = node.values
        return any(isinstance(a, ast.FormattedValue) and isinstance(b, ast.Constant) and isinstance(b.value, str)
                   and b.value.startswith(TARGET_SUFFIXES) for a, b in zip(parts, parts[1:], strict=False))
    return isinstance(node, ast.Constant) and node.value in (*TARGET_SUFFIXES, *(f"*{s}" for s in TARGET_SUFFIXES))


def test_target_file_names_are_built_in_one_module():
    """The 4D LangSplat target format has one home (``preprocess/target_format.py``): no other module builds a
    ``<key>_s.npy`` / ``<key>_f.npy`` name or globs for one, and no other module slices the levels' planes."""
    home = "preprocess/target_format.py"
    builders, slicers = set(), set()
    for d in LIBRARY_DIRS:
        for f in sorted((REPO_ROOT / d).rglob("*.py")):
            rel = str(f.relative_to(REPO_ROOT))
            tree = ast.parse(f.read_text(), filename=rel)
            if any(_builds_target_name(n) for n in ast.walk(tree)):
                builders.add(rel)
            if re.search(r"slice\(1, 4\)|\[1:4\]", f.read_text()):
                slicers.add(rel)
    assert builders == {home}, sorted(builders)
    assert not slicers - {home}, sorted(slicers)
