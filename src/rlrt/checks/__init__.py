"""The config's cross-field checks, one area per module, each raising :class:`rlrt.errors.ConfigError` with one
message naming the key; :func:`rlrt.config.validate` runs them after the schema, in this order:

* :mod:`~rlrt.checks.paths`    -- ``results`` (never ``/``, a file or a system folder) and ``tracking.uri``;
* :mod:`~rlrt.checks.data`     -- data splits, backbones (parents, names, chat-template variables);
* :mod:`~rlrt.checks.limits`   -- each stand-in's architecture (head divisibility) and context (response lengths);
* :mod:`~rlrt.checks.runs`     -- RL batch / save steps, evaluation ks, methods, sweeps, what the plan trains;
* :mod:`~rlrt.checks.backend`  -- resources, the verl backend's rules and GPU memory, the jobs' environment;
* :mod:`~rlrt.checks.analysis` -- the ``analysis`` block;
* :mod:`~rlrt.checks.rlt`      -- the ``rlt`` block.

They sit above :mod:`rlrt.plan` and :mod:`rlrt.claims` (they check what the plan trains) and below
:mod:`rlrt.config`; none imports another.
"""
