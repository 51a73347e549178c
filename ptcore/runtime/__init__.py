"""What every layer shares, below the training loop: atomic, verified files
(:mod:`~ptcore.runtime.files`), torch.distributed helpers (:mod:`~ptcore.runtime.distributed`),
the random generators (:mod:`~ptcore.runtime.rng`), run settings
(:mod:`~ptcore.runtime.settings`) and the run folder's one owner
(:mod:`~ptcore.runtime.run_folder`). The cache, models, reports and the engine import it; it
imports none of them."""
