# Regenerates the brms reference for the binomial meta-regression (issue 15) that tests/test_nuts_metareg.py pins:
# rescuemeta's contrast model with moderators, written as a brms model with identical priors.
#
#   apt-get install r-base-core r-cran-brms r-cran-jsonlite
#   ln -s /usr/include /usr/lib/R/site-library/BH/include     (Debian's r-cran-bh lacks it; rstan needs it)
#   Rscript validation/brms_metareg_reference.R             (run from the project root; ~2 min per case)
#
# rescuemeta's model: logit p_control,i = alpha_i, logit p_treat,i = alpha_i + theta_i,
# theta_i ~ N(mu + x_i' beta, tau^2), alpha_i ~ N(0, 10^2), mu ~ N(0, 4^2), beta ~ N(0, 10^2), tau ~ half-N(0, 0.5^2),
# with numeric moderators centred at their mean over the studies (so mu is the effect at the mean) and text
# moderators as treatment-coded dummies. In brms: events | trials(n) ~ 0 + study + treat + treat:x... +
# (0 + treat | study), the study dummies carrying alpha_i. Writes tests/data/brms_metareg_reference.json with
# each coefficient's posterior mean, SD, 2.5/50/97.5% quantiles and Monte Carlo SE of the mean (posterior
# package), from 4 chains x 5000 draws.
suppressMessages({library(brms); library(jsonlite); library(posterior)})

long <- function(d, xcols) {
  k <- nrow(d)
  out <- data.frame(study = factor(rep(d$study_id, 2), levels = d$study_id),
                    treat = rep(c(1, 0), each = k),
                    events = c(d$events_treat, d$events_control), n = c(d$total_treat, d$total_control))
  for (x in xcols) out[[x]] <- rep(d[[x]], 2) * out$treat
  out
}

cases <- list()
run <- function(name, d, xcols, coef_names) {
  dl <- long(d, xcols)
  rhs <- paste(c("0 + study + treat", xcols, "(0 + treat | study)"), collapse = " + ")
  form <- bf(as.formula(paste("events | trials(n) ~", rhs)))
  pri <- c(prior(normal(0, 10), class = b), prior(normal(0, 4), class = b, coef = treat),
           prior(normal(0, 0.5), class = sd))
  fit <- brm(form, data = dl, family = binomial(), prior = pri, chains = 4, cores = 2, iter = 6000,
             warmup = 1000, seed = 20261126, refresh = 0, silent = 2, control = list(adapt_delta = 0.99))
  vars <- c("b_treat", paste0("b_", xcols), "sd_study__treat")
  dr <- as_draws_array(fit, variable = vars)
  summ <- list()
  for (j in seq_along(vars)) {
    x <- dr[, , vars[j]]
    summ[[c("mu", coef_names, "tau")[j]]] <- list(
      mean = mean(x), sd = sd(x), q025 = unname(quantile(x, 0.025)), q50 = unname(quantile(x, 0.5)),
      q975 = unname(quantile(x, 0.975)), mcse_mean = mcse_mean(x), rhat = rhat(x), ess_bulk = ess_bulk(x))
  }
  np <- nuts_params(fit)
  cases[[name]] <<- list(values = summ, divergences = sum(np$Value[np$Parameter == "divergent__"]),
                         draws = ndraws(fit))
}

# 1. dat.bcg (metadat) as rescuemeta's tests read it, log OR on absolute latitude, centred
bcg <- read.csv(file.path("tests", "data", "datasets", "bcg_mods.csv"), stringsAsFactors = FALSE)
bcg$ablat <- bcg$ablat - mean(bcg$ablat)
run("bcg_mods_ablat", bcg, c("ablat"), c("ablat"))

# 2. the project's mortality rows with both arms (every row: rescuemeta's --all-studies), by circulation
s <- read.csv(file.path("data", "studies.csv"), stringsAsFactors = FALSE)
m <- s[s$outcome == "mortality" & !is.na(s$total_control), ]
lv <- sort(unique(m$circulation), method = "radix")
xcols <- c(); names <- c()
for (l in lv[-1]) {
  col <- paste0("circ_", l)
  m[[col]] <- as.numeric(m$circulation == l)
  xcols <- c(xcols, col); names <- c(names, paste0("circulation[", l, "]"))
}
run("mortality_circulation", m, xcols, names)

ref <- list(generated_by = "validation/brms_metareg_reference.R",
            brms_version = as.character(packageVersion("brms")), rstan_version = as.character(packageVersion("rstan")),
            r_version = R.version.string, cases = cases)
writeLines(toJSON(ref, auto_unbox = TRUE, digits = NA, pretty = TRUE), file.path("tests", "data", "brms_metareg_reference.json"))
cat("wrote", length(cases), "cases\n")
