"""wbc: white blood cell classification from blood-smear images.

Public API::

    import wbc
    model = wbc.load_model()              # the shipped model, or a path
    results = model.predict(["cell.jpeg"])
"""

__version__ = "0.1.0"

from wbc.errors import WbcError  # noqa: E402


def load_model(path=None, device=None):
    """Load a wbc model file (default: the model shipped inside the package)."""
    from wbc.predict import load_model as _load

    return _load(path, device=device)


__all__ = ["__version__", "WbcError", "load_model"]
