"""Hypothesis draws the same examples on every run (derandomize), so a CI run cannot fail on
an example no earlier run saw; HYPOTHESIS_PROFILE=explore searches afresh each run."""
import os

from hypothesis import settings

settings.register_profile("ci", derandomize=True)
settings.register_profile("explore", derandomize=False)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
