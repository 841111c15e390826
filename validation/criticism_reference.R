# Regenerates the metafor reference values for model criticism (issue 16) that
# tests/test_criticism_metafor_parity.py pins: leave1out(), influence(), cumul(), regtest() and trimfill() on
# rma() fits (intercept only) of dat.bcg, dat.egger2001 and the project's rows with both arms.
#
#   apt-get install r-base-core r-cran-metafor r-cran-metadat r-cran-jsonlite
#   Rscript validation/criticism_reference.R          (run from the project root)
#
# Reads the datasets tests/data/datasets/*.csv written by metafor_reference.R / metareg_reference.R (bcg_mods:
# dat.bcg with year; egger2001; rescue_mods_<outcome>: our rows with both arms and their year) and writes
# tests/data/criticism_reference.json. REML and PM are converged tightly, as in the other reference scripts.
suppressMessages({library(metafor); library(jsonlite)})
ctrl <- list(threshold = 1e-13, maxiter = 10000, tol = 1e-13, stepadj = 0.5)
ds_dir <- file.path("tests", "data", "datasets")
sets <- list(bcg_mods = "year", egger2001 = NULL)
for (f in list.files(ds_dir, pattern = "^rescue_mods_.*\\.csv$")) sets[[sub("\\.csv$", "", f)]] <- "year"
cases <- list()
for (nm in names(sets)) {
  d <- read.csv(file.path(ds_dir, paste0(nm, ".csv")), stringsAsFactors = FALSE)
  for (measure in c("OR", "RR")) {
    es <- escalc(measure = measure, ai = events_treat, n1i = total_treat, ci = events_control, n2i = total_control,
                 data = d, drop00 = TRUE)
    ok <- is.finite(es$yi)
    yi <- es$yi[ok]; vi <- es$vi[ok]
    ord <- if (is.null(sets[[nm]])) NULL else d[[sets[[nm]]]][ok]
    for (method in c("DL", "REML", "PM")) {
      for (hksj in c(FALSE, TRUE)) {
        res <- tryCatch(rma(yi, vi, method = method, test = if (hksj) "knha" else "z", control = ctrl),
                        error = function(e) e)
        if (inherits(res, "error")) next
        l1 <- leave1out(res, control = ctrl)
        inf <- influence(res)$inf
        case <- list(dataset = nm, measure = measure, method = method, hksj = hksj, k = res$k,
                     leave1out = list(estimate = l1$estimate, se = l1$se, ci_low = l1$ci.lb, ci_high = l1$ci.ub,
                                      pval = l1$pval, q = l1$Q, tau2 = l1$tau2, i2 = l1$I2),
                     influence = list(rstudent = inf$rstudent, dffits = inf$dffits, cook_d = inf$cook.d,
                                      cov_r = inf$cov.r, tau2_del = inf$tau2.del, q_del = inf$QE.del,
                                      hat = inf$hat, weight = inf$weight))
        if (!is.null(ord)) {
          cu <- cumul(res, order = ord)
          case$cumulative <- list(order = ord, estimate = cu$estimate, se = cu$se, ci_low = cu$ci.lb,
                                  ci_high = cu$ci.ub, tau2 = cu$tau2)
        }
        if (res$k >= 3) {
          rt <- regtest(res, control = ctrl)
          case$regtest <- list(z = rt$zval, pval = rt$pval, limit_estimate = rt$est, ci_low = rt$ci.lb,
                               ci_high = rt$ci.ub)
          if (!hksj) {
            tf <- trimfill(res, control = ctrl)  # the refits converged as tightly as the reference fits
            case$trimfill <- list(k0 = tf$k0, side = tf$side, estimate = unname(tf$beta[1]), se = tf$se,
                                  ci_low = tf$ci.lb, ci_high = tf$ci.ub, k = tf$k)
          }
        }
        cases[[length(cases) + 1]] <- case
      }
    }
  }
}
ref <- list(generated_by = "validation/criticism_reference.R", metafor_version = as.character(packageVersion("metafor")),
            r_version = R.version.string, control = ctrl, cases = cases)
writeLines(toJSON(ref, auto_unbox = TRUE, digits = NA, pretty = TRUE), file.path("tests", "data", "criticism_reference.json"))
cat("wrote", length(cases), "cases\n")
