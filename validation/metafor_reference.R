# Regenerates the metafor reference values that tests/test_freq_metafor_parity.py pins.
#
#   apt-get install r-base-core r-cran-metafor r-cran-metadat r-cran-lme4 r-cran-jsonlite
#   Rscript validation/metafor_reference.R          (run from the project root)
#
# Writes tests/data/datasets/*.csv (the metadat datasets, in rescuemeta's column layout) and
# tests/data/metafor_reference.json. CI never runs this: it only reads the pinned files.
#
# Convergence controls are tightened (REML threshold, PM root tolerance) so that the reference is
# the exact estimator value, not metafor's default stopping point (REML threshold 1e-5), and the
# comparison can be made to relative 1e-6.
suppressMessages({
  library(metafor)
  library(jsonlite)
})

out_dir <- file.path("tests", "data")
ds_dir <- file.path(out_dir, "datasets")
dir.create(ds_dir, showWarnings = FALSE, recursive = TRUE)

two_arm <- list(
  bcg = with(dat.bcg, data.frame(study_id = paste0(author, " ", year), ai = tpos, n1i = tpos + tneg,
                                 ci = cpos, n2i = cpos + cneg)),
  egger2001 = with(dat.egger2001, data.frame(study_id = paste0(study, " ", year), ai = ai, n1i = n1i,
                                             ci = ci, n2i = n2i)),
  nielweise2007 = with(dat.nielweise2007, data.frame(study_id = paste0(author, " ", year), ai = ai,
                                                     n1i = n1i, ci = ci, n2i = n2i)),
  # Crins et al. 2014 (Roever 2020, J Stat Softw 93(6), section 3): IL-2RA vs control, acute rejection.
  crins2014 = data.frame(study_id = c("Heffron 2003", "Gibelli 2004", "Schuller 2005", "Ganschow 2005",
                                      "Spada 2006", "Gras 2008"),
                         ai = c(14, 16, 3, 9, 4, 0), n1i = c(61, 28, 18, 54, 36, 50),
                         ci = c(15, 19, 8, 29, 11, 3), n2i = c(20, 28, 12, 54, 36, 34))
)
single_arm <- list(
  pritz1997 = with(dat.pritz1997, data.frame(study_id = paste0(study, " ", authors), xi = xi, ni = ni)),
  bcg_treated = with(dat.bcg, data.frame(study_id = paste0(author, " ", year), xi = tpos, ni = tpos + tneg))
)

# Extreme but legal data (issue: hardening): zero cells and double zeros, 100% arms, two studies, one study,
# very large n; single-arm 0% and 100% rates and a single rate. Cases where metafor refuses are recorded with
# its error message, and the tests require rescuemeta to refuse them too.
two_arm$extreme_zero_cells <- data.frame(study_id = paste0("Z", 1:5), ai = c(0, 0, 0, 2, 0),
  n1i = c(20, 30, 25, 40, 15), ci = c(0, 3, 1, 5, 0), n2i = c(20, 28, 30, 40, 15))
two_arm$extreme_full_arms <- data.frame(study_id = paste0("F", 1:4), ai = c(20, 30, 18, 10),
  n1i = c(20, 30, 25, 12), ci = c(15, 30, 20, 9), n2i = c(20, 30, 25, 12))
two_arm$extreme_two_studies <- data.frame(study_id = c("A", "B"), ai = c(12, 30), n1i = c(50, 80),
  ci = c(20, 35), n2i = c(50, 85))
two_arm$extreme_single_study <- data.frame(study_id = "S", ai = 12, n1i = 50, ci = 20, n2i = 50)
two_arm$extreme_large_n <- data.frame(study_id = paste0("L", 1:3), ai = c(1200, 3400, 2100),
  n1i = c(1e6, 2e6, 1.5e6), ci = c(1500, 3900, 2500), n2i = c(1e6, 2e6, 1.5e6))
single_arm$extreme_zero_rates <- data.frame(study_id = paste0("R", 1:3), xi = c(0, 0, 0), ni = c(10, 20, 15))
single_arm$extreme_full_rates <- data.frame(study_id = paste0("R", 1:3), xi = c(10, 20, 15), ni = c(10, 20, 15))
single_arm$extreme_single_rate <- data.frame(study_id = "R1", xi = 5, ni = 40)

# The project's own evidence base, every row with the needed arms (no inclusion rule): pins the engine
# on the real data, zero cells and 100% arms included.
studies <- read.csv(file.path("data", "studies.csv"), stringsAsFactors = FALSE)
for (oc in unique(studies$outcome)) {
  s <- studies[studies$outcome == oc, ]
  ta <- s[!is.na(s$total_control), ]
  if (nrow(ta) >= 2) {
    two_arm[[paste0("rescue_", oc)]] <- data.frame(study_id = ta$study_id, ai = ta$events_treat,
      n1i = ta$total_treat, ci = ta$events_control, n2i = ta$total_control)
  }
  if (nrow(s) >= 2) {
    single_arm[[paste0("rescue_", oc, "_stent_arm")]] <- data.frame(study_id = s$study_id, xi = s$events_treat,
                                                      ni = s$total_treat)
  }
}

for (nm in names(two_arm)) {
  d <- two_arm[[nm]]
  names(d) <- c("study_id", "events_treat", "total_treat", "events_control", "total_control")
  write.csv(d, file.path(ds_dir, paste0(nm, ".csv")), row.names = FALSE)
}
for (nm in names(single_arm)) {
  d <- single_arm[[nm]]
  names(d) <- c("study_id", "events_treat", "total_treat")
  write.csv(d, file.path(ds_dir, paste0(nm, ".csv")), row.names = FALSE)
}

ctrl <- list(threshold = 1e-13, maxiter = 10000, tol = 1e-13, stepadj = 0.5)
num <- function(x) if (is.null(x) || length(x) == 0 || is.na(x[1])) NULL else unname(as.numeric(x[1]))

collect <- function(res, pi = TRUE) {
  p <- predict(res)
  r <- list(estimate = num(coef(res)), se = num(res$se), ci_low = num(res$ci.lb), ci_high = num(res$ci.ub),
            pval = num(res$pval), tau2 = num(res$tau2), i2 = num(res$I2), q = num(res$QE),
            k = num(res$k))
  if (pi && !is.null(p$pi.lb)) {
    r$pi_low <- num(p$pi.lb)
    r$pi_high <- num(p$pi.ub)
  }
  r[!vapply(r, is.null, logical(1))]
}

cases <- list()
add_case <- function(dataset, measure, method, hksj, drop00, res, pi = TRUE) {
  if (inherits(res, "error")) {
    cases[[length(cases) + 1]] <<- list(dataset = dataset, measure = measure, method = method,
                                        hksj = hksj, drop00 = drop00, error = conditionMessage(res))
    return(invisible())
  }
  cases[[length(cases) + 1]] <<- list(dataset = dataset, measure = measure, method = method,
                                      hksj = hksj, drop00 = drop00, values = collect(res, pi))
}
try_fit <- function(expr) tryCatch(suppressWarnings(expr), error = function(e) e)

for (nm in names(two_arm)) {
  d <- two_arm[[nm]]
  for (measure in c("OR", "RR", "RD")) {
    for (method in c("DL", "REML", "PM")) {
      for (hksj in c(FALSE, TRUE)) {
        for (drop00 in c(TRUE, FALSE)) {
          res <- try_fit(rma(measure = measure, ai = ai, n1i = n1i, ci = ci, n2i = n2i, data = d, method = method,
                     test = if (hksj) "knha" else "z", drop00 = drop00, control = ctrl))
          add_case(nm, measure, method, hksj, drop00, res)
        }
      }
    }
    res <- try_fit(rma.mh(measure = measure, ai = ai, n1i = n1i, ci = ci, n2i = n2i, data = d))
    add_case(nm, measure, "MH", FALSE, TRUE, res, pi = FALSE)
  }
  res <- try_fit(rma.peto(ai = ai, n1i = n1i, ci = ci, n2i = n2i, data = d))
  add_case(nm, "OR", "PETO", FALSE, TRUE, res, pi = FALSE)
}

for (nm in names(single_arm)) {
  d <- single_arm[[nm]]
  for (method in c("DL", "REML", "PM")) {
    for (hksj in c(FALSE, TRUE)) {
      res <- try_fit(rma(measure = "PLO", xi = xi, ni = ni, data = d, method = method,
                 test = if (hksj) "knha" else "z", control = ctrl))
      add_case(nm, "PLO", method, hksj, TRUE, res)
    }
  }
  res <- try_fit(rma.glmm(measure = "PLO", xi = xi, ni = ni, data = d, method = "ML"))
  add_case(nm, "PLO", "GLMM", FALSE, TRUE, res)
}

ref <- list(
  generated_by = "validation/metafor_reference.R",
  metafor_version = as.character(packageVersion("metafor")),
  lme4_version = as.character(packageVersion("lme4")),
  r_version = R.version.string,
  control = ctrl,
  cases = cases
)
writeLines(toJSON(ref, auto_unbox = TRUE, digits = NA, pretty = TRUE),
           file.path(out_dir, "metafor_reference.json"))
cat("wrote", length(cases), "cases to", file.path(out_dir, "metafor_reference.json"), "\n")
