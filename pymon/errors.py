"""The one small error hierarchy. Each error knows its exit status and how P0 prints it."""

from __future__ import annotations


class PymonError(Exception):
    """An error that ends the process with `status` after printing `render()` to stderr."""

    status = 1

    def render(self) -> str:
        return f"[conmon:e]: {self}\n"


class UsageError(PymonError):
    """argv could not be parsed; GLib's wording, as podman and scripts see it from conmon."""

    def render(self) -> str:
        return f"conmon: option parsing failed: {self}\n"


class CliError(PymonError):
    """argv parsed but its values are invalid (contract §1.5)."""


class SetupError(PymonError):
    """A system call needed before the runtime could run failed (strerror appended)."""

    def __init__(self, text: str, err: OSError | None = None) -> None:
        if err is not None and err.strerror:
            text = f"{text} {err.strerror}"
        super().__init__(text)
