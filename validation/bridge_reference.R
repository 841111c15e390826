# Regenerates the brms + bridgesampling reference for the marginal likelihoods of rescuemeta's sampled models
# (issue 18), pinned by tests/test_bridge_sampling.py: log marginal likelihoods of the contrast model under
# {random effects, mu = 0, tau = 0} on dat.bcg and on the rescue mortality rows, and of the proportion model under
# {random effects, tau = 0} on the rescue stent-arm mortality rows, each with bridgesampling's error estimate.
#
#   apt-get install r-base-core r-cran-brms r-cran-jsonlite     (brms brings bridgesampling)
#   ln -s /usr/include /usr/lib/R/site-library/BH/include       (Debian's r-cran-bh lacks it; rstan needs it)
#   Rscript validation/bridge_reference.R                       (run from the project root; ~10 min)
#
# rescuemeta's contrast model: logit p_control,i = alpha_i, logit p_treat,i = alpha_i + theta_i,
# theta_i ~ N(mu, tau^2), alpha_i ~ N(0, 10^2), mu ~ N(0, 4^2), tau ~ half-N(0, 0.5^2): in brms
# events | trials(n) ~ 0 + study + treat + (0 + treat | study), the study dummies carrying alpha_i (brms adds
# every normalising constant, including the half-normal's truncation, to the target: comparable evidences).
# mu = 0 drops `treat`; tau = 0 drops the random term. The proportion model: logit p_i = theta_i ~ N(mu, tau^2),
# mu ~ N(0, 4^2), tau ~ half-N(0, 1): events | trials(n) ~ 1 + (1 | study). Each fit 4 chains x 10000 draws;
# bridge_sampler(method = "normal") repeated 3 times (the mean and the spread of its estimates are pinned).
suppressMessages({library(brms); library(jsonlite); library(bridgesampling)})

long <- function(d) {
  k <- nrow(d)
  data.frame(study = factor(rep(d$study_id, 2), levels = d$study_id), treat = rep(c(1, 0), each = k),
             events = c(d$events_treat, d$events_control), n = c(d$total_treat, d$total_control))
}
pri_c <- c(prior(normal(0, 10), class = b), prior(normal(0, 4), class = b, coef = treat),
           prior(normal(0, 0.5), class = sd))
forms <- list(
  random = list(f = events | trials(n) ~ 0 + study + treat + (0 + treat | study), p = pri_c),
  random_null = list(f = events | trials(n) ~ 0 + study + (0 + treat | study),
                     p = c(prior(normal(0, 10), class = b), prior(normal(0, 0.5), class = sd))),
  fixed = list(f = events | trials(n) ~ 0 + study + treat,
               p = c(prior(normal(0, 10), class = b), prior(normal(0, 4), class = b, coef = treat))))
pforms <- list(
  random = list(f = events | trials(n) ~ 1 + (1 | study),
                p = c(prior(normal(0, 4), class = Intercept), prior(normal(0, 1), class = sd))),
  fixed = list(f = events | trials(n) ~ 1, p = c(prior(normal(0, 4), class = Intercept))))

evidence <- function(key, spec, data) {  # (each data set compiles anew: the study dummies change the parameters)
  fit <- brm(spec$f, data = data, family = binomial(), prior = spec$p, chains = 4, cores = 2, iter = 11000,
             warmup = 1000, seed = 20261127, refresh = 0, silent = 2, save_pars = save_pars(all = TRUE),
             control = list(adapt_delta = 0.99))
  np <- nuts_params(fit)
  bs <- lapply(1:3, function(r) bridge_sampler(fit, method = "normal", silent = TRUE, use_neff = TRUE))
  logml <- sapply(bs, function(b) b$logml)
  cv <- sapply(bs, function(b) error_measures(b)$cv)
  list(log_ml = mean(logml), log_ml_runs = logml, cv = mean(cv),
       divergences = sum(np$Value[np$Parameter == "divergent__"]), draws = ndraws(fit))
}

cases <- list()
for (ds in c("bcg", "rescue_mortality")) {
  d <- read.csv(file.path("tests", "data", "datasets", paste0(ds, ".csv")), stringsAsFactors = FALSE)
  out <- list()
  for (m in names(forms)) out[[m]] <- evidence(paste0("contrast_", m), forms[[m]], long(d))
  cases[[paste0(ds, "_contrast")]] <- list(dataset = ds, model = "contrast", tau_prior = "halfnormal(0.5)",
                                           effect_prior = "normal(0, 4)", baseline_prior = "normal(0, 10)",
                                           evidence = out)
}
d <- read.csv(file.path("tests", "data", "datasets", "rescue_mortality_stent_arm.csv"), stringsAsFactors = FALSE)
pd <- data.frame(study = factor(d$study_id, levels = d$study_id), events = d$events_treat, n = d$total_treat)
out <- list()
for (m in names(pforms)) out[[m]] <- evidence(paste0("proportion_", m), pforms[[m]], pd)
cases[["rescue_mortality_stent_arm_proportion"]] <- list(dataset = "rescue_mortality_stent_arm", model = "proportion",
                                                         tau_prior = "halfnormal(1)", effect_prior = "normal(0, 4)",
                                                         evidence = out)

ref <- list(generated_by = "validation/bridge_reference.R",
            brms_version = as.character(packageVersion("brms")),
            bridgesampling_version = as.character(packageVersion("bridgesampling")),
            rstan_version = as.character(packageVersion("rstan")), r_version = R.version.string, cases = cases)
writeLines(toJSON(ref, auto_unbox = TRUE, digits = NA, pretty = TRUE), file.path("tests", "data", "bridge_reference.json"))
cat("wrote", length(cases), "cases\n")
