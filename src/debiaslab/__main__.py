"""``python -m debiaslab`` (also what ``torchrun -m debiaslab`` runs)."""

from debiaslab.cli.main import run

run()
