"""Where a file sits in its tree: what a rule may know about a file besides its bytes."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FileContext:
    """Immutable facts about the file being migrated; cheap to pickle."""

    #: POSIX path relative to the root the run was given (what reports show).
    path: str
    #: Dotted module name derived from the ``__init__.py`` chain above the file, or ``None``
    #: when the file is not inside a package. ``vllm/utils/__init__.py`` -> ``vllm.utils``.
    module: str | None = None
    #: True for a package's ``__init__.py``.
    is_package: bool = False

    @property
    def package(self) -> str | None:
        """The package relative imports in this file are resolved against."""
        if self.module is None:
            return None
        if self.is_package:
            return self.module
        head, _, _ = self.module.rpartition(".")
        return head or None

    def resolve_relative(self, level: int, module: str | None) -> str | None:
        """Absolute dotted name of ``from <level dots><module> import ...``; None if unknowable."""
        if level == 0:
            return module
        package = self.package
        if package is None:
            return None
        parts = package.split(".")
        if level - 1 >= len(parts):
            return None
        base = parts[: len(parts) - (level - 1)]
        return ".".join(base + ([module] if module else []))
