"""Errors a caller can act on.

Bad input (``InputError`` and its kinds) carries a code and a message a person can act on,
the same whether it arrives over HTTP, in a batch or through the CLI; the web layer's one
table (web/errors.py) says which HTTP status each code gets. A model file that must not be
served (``ModelContractError``) and an ONNX copy that cannot be used
(``OnnxCopyUnavailable``) are the operator's to fix, not a request's.
"""


class InputError(Exception):
    """Bad input from the caller; never a fault of the service."""

    code = "bad_request"

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message

    @classmethod
    def coded(cls, code: str, message: str) -> "InputError":
        """The error of ``code``, as it arrives from another process in two columns of text."""
        error = cls(message)
        error.code = code
        return error


class MissingFile(InputError):
    code = "missing_file"


class EmptyInput(InputError):
    code = "empty_file"


class NotAnImage(InputError):
    code = "not_an_image"


class UnreadableFile(InputError):
    """A file the batch command was given that cannot be read (missing, no permission)."""

    code = "unreadable"


class UnsupportedImageType(InputError):
    code = "unsupported_type"


class ImageTooLarge(InputError):
    code = "image_too_large"


class InvalidParameter(InputError):
    code = "invalid_parameter"


class ModelContractError(Exception):
    """A model file that does not meet the model-file contract (docs/model.md#the-model-file)."""


class TooManyFiles(InputError):
    code = "too_many_files"


class OnnxCopyUnavailable(Exception):
    """No ONNX copy of the served model to use: none set, missing, made from another model, or failing its check.

    The server then runs the model with TorchScript (classifier/pipeline.py), and the
    browser's path answers 404 with the reason (web/device.py).
    """

    @property
    def message(self) -> str:
        return str(self)
