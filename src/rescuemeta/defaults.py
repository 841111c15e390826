"""The package's defaults in one place: interval levels, the convergence guard, the sampler's acceptance target,
and the thresholds of probability tables. Every module reads them from here; a spec or an option overrides them
per analysis."""

from statistics import NormalDist

__all__ = ["LEVEL", "HDI_PROB", "Z975", "Z95", "RHAT_MAX", "ESS_MIN", "TARGET_ACCEPT", "THRESHOLDS"]

LEVEL = 0.95  # confidence, credible and prediction intervals (central), and HDIs
HDI_PROB = LEVEL
Z975 = NormalDist().inv_cdf(0.975)  # the normal quantile of a central 95% interval
Z95 = NormalDist().inv_cdf(0.95)

# convergence guard (Vehtari et al. 2021): a fit is reported only when every monitored quantity passes
RHAT_MAX = 1.01
ESS_MIN = 400  # bulk and tail ESS
TARGET_ACCEPT = 0.95  # NUTS; the guard's retry uses 0.99 (SBC: 25/100 fits with divergences at 0.8, 0/100 at 0.95)

THRESHOLDS = (1.0, 0.9, 0.8)  # ratio thresholds of P(ratio < t) tables

BASELINES = ("independent", "hierarchical")
# What RR and RD are conditional on (FitConfig.control_risk), besides a number in (0, 1):
CONTROL_RISKS = {
    "median": "the median observed control-arm risk of the included studies",
    "mean-draws": "the mean of the included studies' baseline risks, per posterior draw",
    "marginal": "population-averaged risks over the distribution of study baselines (hierarchical baselines; "
                "Warn et al. 2002): RR = E[expit(alpha + theta)] / E[expit(alpha)]",
}
