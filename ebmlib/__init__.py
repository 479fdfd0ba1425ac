"""ebmlib: the small tested library behind the companion to Bengio & Fischer (2015).

Notation follows ``PAPER.md``: states are lists ``h = [x, h_1, …, h_N]``,
weights ``W[k]`` of shape ``(n_{k-1}, n_k)``, batch-first tensors.
"""

__version__ = "0.1.0"

from . import estimators, learning, noise, response, variants
from .activations import ACTIVATIONS, Activation, get_activation
from .arrival import FirstArrival, displaced_arrival, first_arrival, one_sided_chain_gradient, pinned_units
from .checks import DivergenceError
from .data import Dataset, load_digits, load_idx_dataset, one_hot, read_idx
from .dynamics import Relaxation, Trajectory, relax, run, step
from .estimators import (
    chain_param_gradient,
    ep_gradient,
    ep_symmetric_gradient,
    implicit_param_gradient,
    plasticity_gradient,
)
from .feedforward import feedforward, layer_drive
from .figures import Claim, Run, at_least, at_most, resolve_device, within
from .gradients import (
    adjoint,
    autograd_force,
    bptt,
    chain_gradient,
    cost_gradient,
    flatten,
    hessian,
    hvp,
    implicit_gradient,
    unflatten,
)
from .learning import (
    METHODS,
    History,
    TrainConfig,
    evaluate,
    first_arrival_gradient,
    mlp_forward,
    predict,
    train,
)
from .measures import cosine, magnitude_ratio, sign_agreement, snr, trajectory_metric
from .network import LayeredEBM
from .sampling import (
    Density1D,
    LangevinMoments,
    boltzmann_density_1d,
    ks_critical,
    ks_distance,
    langevin_moments,
    tv_distance,
)
from .scaling import continuous_response, loglog_slope, small_time_exponent

__all__ = [
    "__version__",
    "ACTIVATIONS",
    "Activation",
    "get_activation",
    "DivergenceError",
    "FirstArrival",
    "first_arrival",
    "displaced_arrival",
    "pinned_units",
    "one_sided_chain_gradient",
    "Dataset",
    "load_digits",
    "load_idx_dataset",
    "one_hot",
    "read_idx",
    "LayeredEBM",
    "Relaxation",
    "Trajectory",
    "relax",
    "run",
    "step",
    "feedforward",
    "layer_drive",
    "Density1D",
    "boltzmann_density_1d",
    "ks_critical",
    "ks_distance",
    "tv_distance",
    "LangevinMoments",
    "langevin_moments",
    "estimators",
    "noise",
    "response",
    "variants",
    "chain_param_gradient",
    "ep_gradient",
    "ep_symmetric_gradient",
    "implicit_param_gradient",
    "plasticity_gradient",
    "Claim",
    "Run",
    "at_least",
    "at_most",
    "within",
    "resolve_device",
    "adjoint",
    "autograd_force",
    "bptt",
    "chain_gradient",
    "cost_gradient",
    "flatten",
    "hessian",
    "hvp",
    "implicit_gradient",
    "unflatten",
    "cosine",
    "magnitude_ratio",
    "sign_agreement",
    "snr",
    "trajectory_metric",
    "loglog_slope",
    "small_time_exponent",
    "continuous_response",
    "learning",
    "METHODS",
    "History",
    "TrainConfig",
    "evaluate",
    "first_arrival_gradient",
    "mlp_forward",
    "predict",
    "train",
]
