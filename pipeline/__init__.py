"""namelang: learn which language a surname comes from, from its spelling.

The library: pure stages (ingest, normalize, features, model, train, evaluate, tracking)
that a notebook can import and call without Prefect.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("namelang")
except PackageNotFoundError:  # imported from a source tree that was never installed
    __version__ = "0.0.0+local"
