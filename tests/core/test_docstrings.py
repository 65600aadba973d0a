"""Numpydoc sections on every public function of the core packages (issue 14).

ruff's pydocstyle rules (numpy convention, ``pyproject.toml``) check that docstrings exist and are
well formed, and D417 that a ``Parameters`` section names every argument, but not that the sections
are there at all. This test does: every public function and method of ``workflows/``,
``registration/``, ``models/``, ``io/`` and ``msi/`` that takes arguments has a ``Parameters``
section naming each of them, one that returns a value has ``Returns``, and a generator has
``Yields`` (and ``Returns`` when it also returns a value).
"""

import ast
import re
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[2] / "src" / "napari_msi2hist"
FOLDERS = ("workflows", "registration", "models", "io", "msi")
SECTION = re.compile(
    r"^\s*(Parameters|Returns|Yields|Raises|See Also|Notes|Examples)\s*\n\s*-{3,}\s*$"
)


def _modules():
    for folder in FOLDERS:
        for f in sorted((PKG / folder).rglob("*.py")):
            if f.name.startswith("_") and f.name != "__init__.py":
                continue  # a private module: its functions are not public
            yield f


def _public_functions(tree: ast.Module):
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            if not node.name.startswith("_"):
                yield node.name, node
        elif isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
            for item in node.body:
                if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    if item.name.startswith("_"):
                        continue
                    if any(
                        isinstance(d, ast.Name)
                        and d.id in ("property", "cached_property")
                        or isinstance(d, ast.Attribute)
                        and d.attr in ("setter", "cached_property")
                        for d in item.decorator_list
                    ):
                        continue  # a property is documented like an attribute
                    yield f"{node.name}.{item.name}", item


def _own_nodes(fn):
    """The nodes of ``fn``'s body, not those of functions or classes defined inside it."""
    stack = list(fn.body)
    while stack:
        n = stack.pop()
        yield n
        for c in ast.iter_child_nodes(n):
            if not isinstance(c, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)):
                stack.append(c)


def _sections(doc: str) -> dict[str, str]:
    out, name, lines = {}, None, doc.splitlines()
    i = 0
    while i < len(lines):
        if i + 1 < len(lines) and SECTION.match(lines[i] + "\n" + lines[i + 1]):
            name = lines[i].strip()
            out[name] = ""
            i += 2
            continue
        if name:
            out[name] += lines[i] + "\n"
        i += 1
    return out


def _documented_names(text: str) -> set[str]:
    names = set()
    for line in text.splitlines():
        if line.strip() and not line[:1].isspace():
            for n in line.split(" : ")[0].split(","):
                names.add(n.strip().lstrip("*"))
    return names


def problems(path: Path, root: Path = PKG) -> list[str]:
    """What ``path``'s public functions lack, one line each (empty: nothing)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    rel = path.relative_to(root)
    out = []
    for name, fn in _public_functions(tree):
        doc = ast.get_docstring(fn)
        if not doc:
            out.append(f"{rel}:{fn.lineno} {name}: no docstring")
            continue
        sec = _sections(doc)
        a = fn.args
        args = [x.arg for x in (*a.posonlyargs, *a.args, *a.kwonlyargs)]
        args = [x for x in args if x not in ("self", "cls")]
        args += [x.arg for x in (a.vararg, a.kwarg) if x is not None]
        if args:
            if "Parameters" not in sec:
                out.append(f"{rel}:{fn.lineno} {name}: no Parameters section")
            else:
                missing = set(args) - _documented_names(sec["Parameters"])
                if missing:
                    out.append(f"{rel}:{fn.lineno} {name}: Parameters misses {sorted(missing)}")
        nodes = list(_own_nodes(fn))
        generator = any(isinstance(n, (ast.Yield, ast.YieldFrom)) for n in nodes)
        returns = any(
            isinstance(n, ast.Return)
            and n.value is not None
            and not (isinstance(n.value, ast.Constant) and n.value.value is None)
            for n in nodes
        )
        if generator and "Yields" not in sec:
            out.append(f"{rel}:{fn.lineno} {name}: a generator without a Yields section")
        if returns and "Returns" not in sec:
            out.append(f"{rel}:{fn.lineno} {name}: returns a value but has no Returns section")
    return out


@pytest.mark.parametrize("path", list(_modules()), ids=lambda p: str(p.relative_to(PKG)))
def test_public_functions_have_numpydoc_sections(path):
    found = problems(path)
    assert not found, "\n".join(found)


PROBE = '''
def good(a, b=1):
    """Add.

    Parameters
    ----------
    a, b : int
        The terms.

    Returns
    -------
    int
        Their sum.
    """
    return a + b


def no_params(a):
    """Add.

    Returns
    -------
    int
        One.
    """
    return 1


def half(a, b):
    """Add.

    Parameters
    ----------
    a : int
        A term.
    """


def gen(n):
    """Count.

    Parameters
    ----------
    n : int
        How far.
    """
    yield n


class K:
    """A class."""

    def m(self):
        """Nothing to say."""
        return 3

    @property
    def p(self):
        """A value."""
        return 1
'''


def test_the_check_catches_what_it_claims(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text(PROBE)
    text = "\n".join(problems(probe, tmp_path))
    assert "good" not in text and ".p:" not in text
    assert "no_params: no Parameters section" in text
    assert "half: Parameters misses ['b']" in text
    assert "gen: a generator without a Yields section" in text
    assert "K.m: returns a value but has no Returns section" in text
