import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from hypothesis import settings

# Property tests are reproducible: the same examples on every run and in CI.
settings.register_profile("fedge", derandomize=True, deadline=None, print_blob=True)
settings.load_profile("fedge")
