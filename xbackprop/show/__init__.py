"""Pictures and reports of what was learned: training curves, the evaluation of a trained net (confusion
matrix, mistakes), the ``--report`` folder; every figure saved through :func:`figures.save_figure`. The
computational graph is drawn by :mod:`graph_figure`."""
