"""rlrt: reproducibility pipeline for self-distilled RL with verifiable rewards.

Floors (each imports only from floors below it):
  1. math      -- ``rlrt.methods`` (advantages, weights, losses), ``rlrt.metrics``
  2. domain    -- ``rlrt.tasks`` (synthetic task, grading), ``rlrt.teacher`` (privileged context)
  3. engines   -- ``rlrt.backends.local`` (sampling, log-probs, training loop)
  4. stages    -- ``rlrt.stages.*`` (one module per DAG stage, ``python -m rlrt.stages.<name>``)
  5. workflow  -- ``Snakefile``, ``rules/*.smk``, ``workflow/schemas``, ``config/*.yaml``
"""

__version__ = "0.1.0"
