"""The library's errors: one base class and a few precise subclasses.

Every message names the file, layer or tensor concerned, what was received and
what was expected, so that the command line can show it as a single line.
"""

from __future__ import annotations


class LSTMConvertError(Exception):
    """Base class of every error this library raises on purpose.

    ``remedy`` says what to do about it in the library's terms (``pass overwrite=True``) and ``hint`` the
    same in the command line's (``pass --overwrite``): ``str()`` gives the message and the remedy, and the
    command line shows the message and the hint (:meth:`cli_text`).
    """

    def __init__(self, message: str = "", *, remedy: str = "", hint: str = ""):
        super().__init__(message)
        self.message, self.remedy, self.hint = message, remedy, hint or remedy

    def __str__(self) -> str:
        return f"{self.message}; {self.remedy}" if self.remedy else self.message

    def cli_text(self) -> str:
        return f"{self.message}; {self.hint}" if self.hint else self.message

    def prefixed(self, prefix: str) -> LSTMConvertError:
        """The same error, its message prefixed (say with the file's name), unless it already starts so."""
        message = self.message if self.message.startswith(f"{prefix}: ") else f"{prefix}: {self.message}"
        return type(self)(message, remedy=self.remedy, hint=self.hint)


class ShapeError(LSTMConvertError, ValueError):
    """A tensor does not have the shape or dtype its layout requires."""


class ConfigError(LSTMConvertError, ValueError):
    """A layer's or model's configuration is not valid: a value out of range, a setting of another kind of
    layer, names that collide."""


class FormatError(LSTMConvertError, ValueError):
    """A file, archive or state dict is not what its declared format says."""


class UnsupportedError(LSTMConvertError):
    """The conversion cannot be exact, so it is refused before anything is written."""


class MissingDependencyError(LSTMConvertError, ImportError):
    """An optional framework is needed for this call and is not installed."""


class SettingError(LSTMConvertError, ValueError):
    """A setting given by the user does not exist, does not apply to the layer named, or has a bad value."""


def shown(text: str) -> str:
    """``text`` as it may be shown on a terminal: control and other non-printing characters (a newline, an
    escape sequence, a right-to-left override read from a file) escaped, so that no text can forge a line."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() or c == " " else repr(c)[1:-1] if c in "\n\r\t\\" or ord(c) < 0x100
                   else f"\\u{ord(c):04x}" if ord(c) <= 0xFFFF else f"\\U{ord(c):08x}" for c in text)
