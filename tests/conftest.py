import os
import sys
import tempfile
from pathlib import Path

# Tests run in 2 xdist workers on 2 cores: OpenMP libraries (HistGradientBoosting, XGBoost,
# LightGBM) that each spin up a thread per core oversubscribe the machine and slow fits 50x.
for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(var, "1")

# Compiled models are cached by content hash; tests keep theirs out of the user's home.
os.environ.setdefault("FEDGE_CACHE_DIR", tempfile.mkdtemp(prefix="fedge-test-cache-"))

sys.path.insert(0, str(Path(__file__).parent))

from hypothesis import settings  # noqa: E402 (after the thread settings above)

# Property tests are reproducible: the same examples on every run and in CI.
settings.register_profile("fedge", derandomize=True, deadline=None, print_blob=True)
settings.load_profile("fedge")
