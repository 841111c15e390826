# Regenerates the metafor reference values for analyses that mix count rows and reported estimates (issue 17),
# pinned by tests/test_reported_effects.py: per outcome of data/studies.csv, every row with both arms or a
# reported OR (no inclusion rule: the Python side runs with --all-studies), count rows by escalc() (metafor's
# default continuity correction) and reported rows as yi = log(estimate), sei = (log(ci_high) - log(ci_low)) /
# (2 qnorm(0.975)); then rma(yi, sei = sei) by DL, REML and PM, with and without the Knapp-Hartung test.
#
#   apt-get install r-base-core r-cran-metafor r-cran-jsonlite
#   Rscript validation/reported_reference.R          (run from the project root)
suppressMessages({library(metafor); library(jsonlite)})
ctrl <- list(threshold = 1e-13, maxiter = 10000, tol = 1e-13, stepadj = 0.5)
d <- read.csv(file.path("data", "studies.csv"), stringsAsFactors = FALSE, na.strings = c("", "NA"))
cases <- list()
for (oc in sort(unique(d$outcome))) {
  s <- d[d$outcome == oc, ]
  rep <- !is.na(s$estimate) & s$measure == "OR"
  s <- s[!is.na(s$total_control) | rep, ]
  rep <- !is.na(s$estimate) & s$measure == "OR"
  if (nrow(s) < 2 || !any(rep)) next
  yi <- rep(NA_real_, nrow(s)); sei <- rep(NA_real_, nrow(s))
  cnt <- !rep
  es <- escalc(measure = "OR", ai = s$events_treat[cnt], n1i = s$total_treat[cnt], ci = s$events_control[cnt],
               n2i = s$total_control[cnt])
  yi[cnt] <- es$yi; sei[cnt] <- sqrt(es$vi)
  yi[rep] <- log(s$estimate[rep])
  sei[rep] <- (log(s$ci_high[rep]) - log(s$ci_low[rep])) / (2 * qnorm(0.975))
  for (method in c("DL", "REML", "PM")) {
    for (hksj in c(FALSE, TRUE)) {
      res <- rma(yi, sei = sei, method = method, test = if (hksj) "knha" else "z", control = ctrl)
      cases[[length(cases) + 1]] <- list(outcome = oc, method = method, hksj = hksj, study_id = s$study_id,
        reported = I(s$study_id[rep]), yi = yi, sei = sei, k = res$k, estimate = unname(res$beta[1]), se = res$se,
        ci_low = res$ci.lb, ci_high = res$ci.ub, pval = res$pval, tau2 = res$tau2, i2 = res$I2, q = res$QE)
    }
  }
}
out <- list(generated_by = "validation/reported_reference.R", metafor_version = as.character(packageVersion("metafor")),
            r_version = R.version.string, cases = cases)
writeLines(toJSON(out, auto_unbox = TRUE, digits = NA, pretty = TRUE), file.path("tests", "data", "reported_reference.json"))
cat(length(cases), "cases\n")
