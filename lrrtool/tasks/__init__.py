"""Tasks: each restoration task is a start, a forward model (:mod:`lrrtool.forward`), a
low-rank prior (:mod:`lrrtool.priors`), a solver (:mod:`lrrtool.solvers`) and a
schedule, with one frozen settings dataclass (:mod:`lrrtool.settings`).

Pure torch, like the core: no file or terminal I/O.
"""
