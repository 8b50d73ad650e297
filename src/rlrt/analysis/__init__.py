"""The RLRT paper's analyses (Sections 4.1-4.3, 6.2, 6.3; Appendices D, E, H).

* :mod:`rlrt.analysis.divergence` -- information asymmetry D̄_t, D̂_t, JS, explore/exploit candidates (pure);
* :mod:`rlrt.analysis.markers`    -- Monroe et al. smoothed log-odds marker statistics, Table 2 (pure);
* :mod:`rlrt.analysis.injection`  -- reflection-injection positions, sequences, flip rates (pure);
* :mod:`rlrt.analysis.shift`      -- distribution-shift statistics of Fig 7 (pure);
* :mod:`rlrt.analysis.views`      -- running the model: sampling, teacher contexts, position-chunked pair passes;
* :mod:`rlrt.analysis.plots`      -- matplotlib figures (Agg) and the self-contained HTML heatmap.

Statistics never read or write files and never plot; the stages ``rlrt.stages.analysis_*`` do the I/O.
"""
