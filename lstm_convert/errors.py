"""The library's errors: one base class and a few precise subclasses.

Every message names the file, layer or tensor concerned, what was received and
what was expected, so that the command line can show it as a single line.
"""

from __future__ import annotations


class LSTMConvertError(Exception):
    """Base class of every error this library raises on purpose."""


class ShapeError(LSTMConvertError, ValueError):
    """A tensor does not have the shape or dtype its layout requires."""


class FormatError(LSTMConvertError, ValueError):
    """A file, archive or state dict is not what its declared format says."""


class UnsupportedError(LSTMConvertError):
    """The conversion cannot be exact, so it is refused before anything is written."""


class MissingDependencyError(LSTMConvertError, ImportError):
    """An optional framework is needed for this call and is not installed."""


class SettingError(LSTMConvertError, ValueError):
    """A setting given by the user does not exist, does not apply to the layer named, or has a bad value."""
