"""namelang: learn which language a surname comes from, from its spelling.

The library: pure stages (ingest, normalize, features, model, train, evaluate, tracking)
that a notebook can import and call without Prefect.
"""

import os
from importlib.metadata import PackageNotFoundError, version

# PyTorch's CPU threads (libgomp) spin up to 300,000 times waiting for each other before they
# sleep. When another process holds a core, a spinning thread burns the time slice the thread it
# waits for needs: measured on 2 cores, an epoch of the default model took 7.5 s on 2 threads
# against 2.3 s quiet, and 10 to 83 s with a second training beside it. Spinning 1,000 times
# (what libgomp itself does when threads outnumber cores) costs little when the machine is quiet
# and keeps the fair share when it is not (4.0 s and 4.3 s); the numbers computed are the same.
# It must be set before torch loads libgomp, so here, where every entry point starts. A spin count
# or a wait policy already set wins (libgomp would let the count override the policy).
if "GOMP_SPINCOUNT" not in os.environ and "OMP_WAIT_POLICY" not in os.environ:
    os.environ["GOMP_SPINCOUNT"] = "1000"

try:
    __version__ = version("namelang")
except PackageNotFoundError:  # imported from a source tree that was never installed
    __version__ = "0.0.0+local"
