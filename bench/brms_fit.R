# brms/Stan side of bench/bench_tools.py: fits the same models (Smith et al. 1995 contrast model; random-
# intercept proportion model) with the same priors, compiling each Stan program once and re-using it with
# update(newdata=...) for the other outcomes (brms's way to avoid recompilation).
#   Rscript bench/brms_fit.R IN_DIR OUT_JSON DRAWS
suppressMessages({library(brms); library(jsonlite)})
args <- commandArgs(trailingOnly = TRUE)
in_dir <- args[1]; out_json <- args[2]; draws <- as.integer(args[3])
files <- sort(list.files(in_dir, pattern = "\\.csv$", full.names = TRUE))
compiled <- list()
res <- list()
for (f in files) {
  name <- sub("\\.csv$", "", basename(f))
  d <- read.csv(f)
  d$study <- factor(d$study)
  kind <- if (grepl("_contrast$", name)) "contrast" else "proportion"
  if (nlevels(d$study) < 2) {
    res[[name]] <- list(error = "one study: brms cannot build the study factor (contrasts need 2 levels)")
    next
  }
  t0 <- Sys.time()
  if (kind == "contrast") {
    form <- bf(events | trials(n) ~ 0 + study + treat + (0 + treat | study))
    pri <- c(prior(normal(0, 10), class = b), prior(normal(0, 4), class = b, coef = treat),
             prior(normal(0, 0.5), class = sd))
    mu <- "b_treat"; tau <- "sd_study__treat"
  } else {
    form <- bf(events | trials(n) ~ 1 + (1 | study))
    pri <- c(prior(normal(0, 4), class = Intercept), prior(normal(0, 0.5), class = sd))
    mu <- "b_Intercept"; tau <- "sd_study__Intercept"
  }
  if (is.null(compiled[[kind]])) {
    fit <- brm(form, data = d, family = binomial(), prior = pri, chains = 4, cores = 2, iter = 1000 + draws,
               warmup = 1000, seed = 1, refresh = 0, silent = 2, control = list(adapt_delta = 0.95))
    compiled[[kind]] <- fit
  } else {
    fit <- update(compiled[[kind]], newdata = d, chains = 4, cores = 2, iter = 1000 + draws, warmup = 1000,
                  seed = 1, refresh = 0, silent = 2, recompile = FALSE, control = list(adapt_delta = 0.95))
  }
  wall <- as.numeric(difftime(Sys.time(), t0, units = "secs"))
  dr <- posterior::as_draws_array(fit, variable = c(mu, tau))
  ess_mu <- posterior::ess_bulk(dr[, , mu]); ess_tau <- posterior::ess_bulk(dr[, , tau])
  np <- nuts_params(fit)
  div <- sum(np$Value[np$Parameter == "divergent__"])
  res[[name]] <- list(wall = wall, ess_mu = ess_mu, ess_tau = ess_tau, divergences = div)
}
res$versions <- list(brms = as.character(packageVersion("brms")), rstan = as.character(packageVersion("rstan")),
                     R = R.version.string)
writeLines(toJSON(res, auto_unbox = TRUE, digits = NA), out_json)
