"""The error tree of fsbridge. Each class says what happens to the event that raised it.

FsbridgeError
├── ConfigError            configuration file or settings are invalid: the process refuses to start
├── IntakeError            an inbound request is refused; carries the HTTP status and error code
├── MappingError           a flow produced a message its target rejects: the delivery is dead at dispatch
└── StoreUnavailableError  the store cannot take a write: intake answers 503 so the sender retries
"""

from __future__ import annotations


class FsbridgeError(Exception):
    """Base of every error fsbridge raises on purpose."""


class ConfigError(FsbridgeError):
    """The configuration is invalid; `problems` lists every error found, one line each."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


class IntakeError(FsbridgeError):
    """An inbound webhook is refused with `status` and a JSON error body."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


class MappingError(FsbridgeError):
    """A flow's output does not validate into its target's request model."""


class StoreUnavailableError(FsbridgeError):
    """The store could not durably take a write."""
