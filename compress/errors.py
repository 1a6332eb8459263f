"""Errors a user can act on. Library code raises them as plain exceptions; the CLI prints one line."""


class CompressError(ValueError):
    """A problem with the user's input or files, named in the message."""


class MixedImageSizes(CompressError):
    """Images of a dataset differ in size and no input size was given to resize them to one.

    A caller sizing data for a model catches this one (compress.data.options.sized_for) to resize every
    image to the model's input instead; any other CompressError is a real problem with the data."""
