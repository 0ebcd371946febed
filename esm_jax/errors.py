"""Exceptions raised by esm-jax, each carrying enough context to act on."""


class EsmJaxError(Exception):
    """Base class of every error esm-jax raises on purpose."""


class InvalidSequenceError(EsmJaxError, ValueError):
    """A protein sequence holds a character the alphabet cannot encode."""

    def __init__(self, label: str, character: str, position: int, hint: str = ""):
        self.label = label
        self.character = character
        self.position = position
        message = f"sequence {label!r}: character {character!r} at position {position} is not in the ESM alphabet"
        super().__init__(f"{message}. {hint}" if hint else message)


class CheckpointError(EsmJaxError, ValueError):
    """A checkpoint file is missing, damaged, or does not describe a supported model."""


class UnsafeCheckpointError(CheckpointError):
    """A pickled checkpoint asks to import or run something other than plain data."""
