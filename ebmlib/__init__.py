"""ebmlib: the small tested library behind the companion to Bengio & Fischer (2015).

Notation follows PAPER.md: states are lists ``h = [x, h_1, …, h_N]``, weights ``W[k]`` of shape
``(n_{k-1}, n_k)``, batch-first tensors.

**The public API, one rule**: every name in the ``__all__`` of a science module is exported here,
flat (``eb.relax``, ``eb.first_arrival``, ``eb.train``), and nothing else; names are unique across
modules (a test checks it). The pipeline (figures and claims, execution, the site, the benchmark)
is the separate namespace :mod:`ebmlib.book`, which the science never imports. Chapters use
``ebmlib`` and ``ebmlib.book`` only.

Modules, one concept each: ``activations`` (ρ, ρ'), ``network`` (the energy model, its force,
feedback weights), ``dynamics`` (the step, relax, run, schedules; the fast loop in ``_loop``),
``gradients`` (chain, implicit, adjoint, BPTT, autograd references), ``response`` (nudged minus
free: first arrival, trajectories, noise), ``estimators`` (every weight update behind one
interface), ``measures`` (cosines, slopes, SNR, distances), ``langevin`` (stationary density,
chains, noise covariance), ``oneway`` (the one-way, feedforward networks of the same weights),
``problems`` (the standard setup), ``comparison`` (the four error signals side by side), ``learning`` (the trainer), ``data``, ``io``, ``checks``.
"""

from . import (
    activations,
    checks,
    comparison,
    data,
    dynamics,
    estimators,
    gradients,
    io,
    langevin,
    learning,
    measures,
    network,
    oneway,
    problems,
    response,
    selection,
    spiking,
)
from ._version import __version__
from .activations import *  # noqa: F403
from .checks import *  # noqa: F403
from .comparison import *  # noqa: F403
from .data import *  # noqa: F403
from .dynamics import *  # noqa: F403
from .estimators import *  # noqa: F403
from .gradients import *  # noqa: F403
from .io import *  # noqa: F403
from .langevin import *  # noqa: F403
from .learning import *  # noqa: F403
from .measures import *  # noqa: F403
from .network import *  # noqa: F403
from .oneway import *  # noqa: F403
from .problems import *  # noqa: F403
from .response import *  # noqa: F403
from .selection import *  # noqa: F403
from .spiking import *  # noqa: F403

__all__ = ["__version__"] + [name for m in (activations, checks, comparison, network, dynamics, gradients, response, estimators, measures, langevin, oneway, problems, learning, selection, spiking, data, io) for name in m.__all__]
