"""``python -m debiaslab`` (also what ``torchrun -m debiaslab`` runs)."""

from debiaslab.cli import run

run()
