"""Training scripts for the bundled generators (``python -m core.training.stylegan2`` / ``.dcgan``).

:mod:`core.training.common` holds what they share: device choice, seeding, the pre-rendered image
bank, resumable checkpoints, sample grids and the time-budgeted training loop. Beside the library:
it imports the model packages and core.evals (learning curves), never the other way round.
"""

import os

# Training shares a few CPU cores with other work; OpenMP's default spin-waiting then makes every
# process crawl (docs/performance.md has the measurement). Waiting
# passively costs nothing measurable when the cores are free. This only takes effect when torch has
# not been imported yet, as under ``python -m core.training.<model>``.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
