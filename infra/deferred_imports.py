"""Imports a process can do without: modules it imports by name but may never use, loaded on their first
attribute instead, and optional packages it should treat as not installed.

`defer_imports("altair")` makes a later `import altair` bind a placeholder module. The real module is
imported the first time any of its attributes is read; from then on the placeholder reads through to
it, and later imports get the real module. Only for modules whose submodules nobody imports while
they are deferred.

`hide_imports("sqlalchemy")` makes every later import of that package, or of any module in it, raise
ModuleNotFoundError, as if it were not installed: for a library that imports optional back ends
inside `try: ... except ImportError`, and a process that uses none of them.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import types


class _DeferredModule(types.ModuleType):
    def __getattr__(self, attribute: str):
        name = self.__name__
        real = _FINDER.loaded.get(name)
        if real is None:
            if attribute.startswith("__"):  # the import system's own probes (__path__, __file__) load nothing
                raise AttributeError(attribute)
            _FINDER.names.discard(name)
            if sys.modules.get(name) is self:
                del sys.modules[name]
            real = _FINDER.loaded[name] = importlib.import_module(name)
        return getattr(real, attribute)  # always the real module's current value


class _DeferringFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def __init__(self) -> None:
        self.names: set[str] = set()
        self.loaded: dict[str, types.ModuleType] = {}

    def find_spec(self, fullname, path=None, target=None):
        return importlib.machinery.ModuleSpec(fullname, self) if fullname in self.names else None

    def create_module(self, spec):
        return _DeferredModule(spec.name)

    def exec_module(self, module) -> None:
        pass


_FINDER = _DeferringFinder()


def defer_imports(*names: str) -> None:
    """Defer each named module that is not imported yet until its first attribute is read."""
    _FINDER.names.update(name for name in names if name not in sys.modules)
    if _FINDER not in sys.meta_path:
        sys.meta_path.insert(0, _FINDER)


def is_deferred(module: types.ModuleType) -> bool:
    """Whether `module` is a placeholder whose real module has not been imported yet."""
    return isinstance(module, _DeferredModule) and module.__name__ in _FINDER.names


class _HidingFinder(importlib.abc.MetaPathFinder):
    def __init__(self, names: tuple[str, ...]) -> None:
        self.names = names

    def find_spec(self, fullname, path=None, target=None):
        if any(fullname == name or fullname.startswith(name + ".") for name in self.names):
            raise ModuleNotFoundError(f"No module named {fullname!r} (hidden in this process)", name=fullname)
        return None


def hide_imports(*names: str) -> None:
    """Make later imports of each named package (and its modules) fail as if it were not installed."""
    sys.meta_path.insert(0, _HidingFinder(tuple(names)))
