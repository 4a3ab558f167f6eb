"""The errors core raises for bad input. Each message names the file or value at fault."""


class LatentCanvasError(Exception):
    """Base class: a problem the user can fix, shown as a message (never a traceback)."""


class ModelLoadError(LatentCanvasError):
    """A model file is missing, corrupt, of an unknown format, or unsafe to load."""


class ImageLoadError(LatentCanvasError):
    """An image cannot be read (unsupported format, truncated, too large)."""


class JobError(LatentCanvasError):
    """Job parameters that cannot work together (e.g. w+ on a generator without a W space)."""
