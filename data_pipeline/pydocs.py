"""The embedded default corpus: docstrings of the running interpreter's standard library.

Every Python install carries this text, so the project can train and test with no download and
without shipping anybody's corpus. Modules are read with `ast` (never imported), in sorted order,
so the corpus is deterministic for a given interpreter. On CPython 3.11 it is about 8.7k documents,
2.3 MB and 340k words.
"""
import ast
import dataclasses
import functools
import os
import sysconfig

# Directories that hold the stdlib's own test suites or third-party code, not library docs.
_SKIPPED_DIRS = frozenset({"site-packages", "dist-packages", "__pycache__", "test", "tests",
                                                      "idle_test"})
_FUNCTION_NODES = (ast.FunctionDef, ast.AsyncFunctionDef)
_DOCUMENTED_NODES = (ast.ClassDef, *_FUNCTION_NODES)


@dataclasses.dataclass(frozen=True)
class Docstring:
    module: str    # dotted module name, e.g. "email.mime.text"; "pydoc_data.topics" for topics
    name: str      # qualified object name inside the module; "" for the module docstring
    text: str
    params: tuple[str, ...] = ()  # a function's parameter names (without self/cls)

    @property
    def package(self) -> str:
        """The top-level stdlib package the docstring belongs to, e.g. "email"."""
        return self.module.split(".")[0]


def _module_name(root: str, path: str) -> str:
    parts = os.path.relpath(path, root)[:-len(".py")].split(os.sep)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _parameter_names(function) -> tuple[str, ...]:
    a = function.args
    every = [*a.posonlyargs, *a.args, *([a.vararg] if a.vararg else []), *a.kwonlyargs,
             *([a.kwarg] if a.kwarg else [])]
    return tuple(p.arg for p in every if p.arg not in ("self", "cls"))


def _docstrings_below(node, module: str, qualname: str):
    # Recurse through every node, not just direct children: stdlib defines many functions
    # under `if sys.platform ...:` or `try:` blocks.
    for child in ast.iter_child_nodes(node):
        name = qualname
        if isinstance(child, _DOCUMENTED_NODES):
            name = f"{qualname}.{child.name}" if qualname else child.name
            text = ast.get_docstring(child)
            if text:
                params = _parameter_names(child) if isinstance(child, _FUNCTION_NODES) else ()
                yield Docstring(module, name, text, params)
        yield from _docstrings_below(child, module, name)


def _module_docstrings(module: str, source: bytes):
    tree = ast.parse(source)
    text = ast.get_docstring(tree)
    if text:
        yield Docstring(module, "", text)
    yield from _docstrings_below(tree, module, "")


@functools.lru_cache(maxsize=1)
def stdlib_docstrings(stdlib_root: str | None = None) -> tuple[Docstring, ...]:
    """All non-empty docstrings of the stdlib plus the `pydoc_data.topics` help pages."""
    root = stdlib_root or sysconfig.get_paths()["stdlib"]
    docs = []
    for directory, subdirs, files in os.walk(root):
        subdirs[:] = sorted(d for d in subdirs if d not in _SKIPPED_DIRS)
        for filename in sorted(files):
            if not filename.endswith(".py"):
                continue
            path = os.path.join(directory, filename)
            with open(path, "rb") as f:
                source = f.read()
            try:
                docs.extend(_module_docstrings(_module_name(root, path), source))
            except SyntaxError:
                continue  # a few stdlib files are templates or data, not Python of this version
    from pydoc_data.topics import topics  # pylint: disable=g-import-not-at-top
    docs.extend(Docstring("pydoc_data.topics", key, topics[key].strip())
                            for key in sorted(topics))
    docs.sort(key=lambda d: d.module)  # stable: keeps the in-module order
    return tuple(docs)
