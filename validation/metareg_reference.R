# Regenerates the metafor meta-regression and subgroup reference values that
# tests/test_metareg_metafor_parity.py pins (issue 15).
#
#   apt-get install r-base-core r-cran-metafor r-cran-metadat r-cran-jsonlite
#   Rscript validation/metareg_reference.R          (run from the project root)
#
# Writes tests/data/datasets/bcg_mods.csv (metadat's dat.bcg with its moderators ablat, year, alloc),
# tests/data/datasets/rescue_mods_<outcome>.csv (the project's rows with both arms and their moderators) and
# tests/data/metareg_reference.json. CI never runs this: it only reads the pinned files.
#
# The design matrix is built here with R's treatment coding (first level of the sorted levels, C-locale sort,
# as the reference) and passed to rma() as a matrix, so the coefficient names are rescuemeta's
# ("intrcpt", "ablat", "alloc[random]") and the comparison is coefficient by coefficient. REML and PM are
# converged tightly (as in metafor_reference.R), so the reference is the estimator's value.
suppressMessages({
  library(metafor)
  library(metadat)
  library(jsonlite)
})

out_dir <- file.path("tests", "data")
ds_dir <- file.path(out_dir, "datasets")
dir.create(ds_dir, showWarnings = FALSE, recursive = TRUE)
ctrl <- list(threshold = 1e-13, maxiter = 10000, tol = 1e-13, stepadj = 0.5)

datasets <- list()
bcg <- with(dat.bcg, data.frame(study_id = paste0(author, " ", year), events_treat = tpos,
                                total_treat = tpos + tneg, events_control = cpos, total_control = cpos + cneg,
                                ablat = ablat, year = year, alloc = alloc, stringsAsFactors = FALSE))
datasets$bcg_mods <- list(data = bcg, mods = list("ablat", "year", "alloc", c("ablat", "year")))

studies <- read.csv(file.path("data", "studies.csv"), stringsAsFactors = FALSE)
for (oc in unique(studies$outcome)) {
  s <- studies[studies$outcome == oc & !is.na(studies$total_control), ]
  if (nrow(s) < 4) next
  d <- data.frame(study_id = s$study_id, events_treat = s$events_treat, total_treat = s$total_treat,
                  events_control = s$events_control, total_control = s$total_control,
                  circulation = s$circulation, design = s$design, year = s$year, stringsAsFactors = FALSE)
  datasets[[paste0("rescue_mods_", oc)]] <- list(data = d, mods = list("circulation", "year"))
}

design <- function(d, mods) {
  cols <- list()
  for (m in mods) {
    x <- d[[m]]
    if (is.numeric(x)) {
      cols[[m]] <- x
    } else {
      lv <- sort(unique(x), method = "radix")
      for (l in lv[-1]) cols[[paste0(m, "[", l, "]")]] <- as.numeric(x == l)
    }
  }
  X <- do.call(cbind, cols)
  colnames(X) <- names(cols)
  X
}

num <- function(x) if (is.null(x) || length(x) == 0 || is.na(x[1])) NULL else unname(as.numeric(x[1]))
cases <- list()
subgroup_cases <- list()
for (nm in names(datasets)) {
  d <- datasets[[nm]]$data
  write.csv(d, file.path(ds_dir, paste0(nm, ".csv")), row.names = FALSE)
  for (measure in c("OR", "RR")) {
    es <- escalc(measure = measure, ai = events_treat, n1i = total_treat, ci = events_control,
                 n2i = total_control, data = d, drop00 = TRUE)
    ok <- is.finite(es$yi)
    for (mods in datasets[[nm]]$mods) {
      use <- ok  # studies with a finite estimate and every moderator (as metafor's na.action = "na.omit")
      for (m in mods) use <- use & !is.na(d[[m]]) & (as.character(d[[m]]) != "")
      X <- design(d[use, ], mods)
      k <- sum(use)
      p <- ncol(X) + 1
      if (k <= p || qr(cbind(1, X))$rank < p) next
      for (method in c("DL", "REML", "PM")) {
        for (hksj in c(FALSE, TRUE)) {
          res <- tryCatch(rma(yi = es$yi[use], vi = es$vi[use], mods = X, method = method,
                              test = if (hksj) "knha" else "z", control = ctrl), error = function(e) e)
          if (inherits(res, "error")) {  # recorded, so the test knows which cases metafor could not fit
            cat("skipped", nm, measure, method, paste(mods, collapse = "+"), ":", conditionMessage(res), "\n")
            next
          }
          coefs <- list()
          nms <- c("intrcpt", colnames(X))
          for (j in seq_along(nms)) {
            coefs[[nms[j]]] <- list(estimate = unname(res$beta[j]), se = unname(res$se[j]),
                                    ci_low = unname(res$ci.lb[j]), ci_high = unname(res$ci.ub[j]),
                                    pval = unname(res$pval[j]))
          }
          vals <- list(coefficients = coefs, tau2 = num(res$tau2), qm = num(res$QM), qm_pval = num(res$QMp),
                       qe = num(res$QE), qe_pval = num(res$QEp), r2 = num(res$R2), i2 = num(res$I2),
                       k = num(res$k))
          cases[[length(cases) + 1]] <- list(dataset = nm, measure = measure, method = method, hksj = hksj,
                                             mods = as.list(mods), values = vals[!vapply(vals, is.null, logical(1))])
        }
      }
    }
    # subgroups by every text moderator: a random-effects fit per level (own tau^2), then the fixed-effect Q
    # across the subgroup estimates (meta's default test for subgroup differences)
    for (col in unlist(datasets[[nm]]$mods)) {
      x <- d[[col]]
      if (is.numeric(x)) next
      okg <- ok & !is.na(x) & x != ""
      for (method in c("DL", "REML")) {
        for (hksj in c(FALSE, TRUE)) {
          lv <- sort(unique(x[okg]), method = "radix")
          est <- c(); se <- c(); per <- list()
          for (l in lv) {
            sel <- okg & x == l
            r <- rma(yi = es$yi[sel], vi = es$vi[sel], method = method,
                     test = if (hksj && sum(sel) > 1) "knha" else "z", control = ctrl)
            est <- c(est, unname(r$beta[1])); se <- c(se, r$se)
            per[[l]] <- list(estimate = unname(r$beta[1]), se = r$se, ci_low = r$ci.lb, ci_high = r$ci.ub,
                             tau2 = r$tau2, k = r$k)
          }
          if (length(lv) < 2) next
          q <- rma(yi = est, sei = se, method = "EE")
          subgroup_cases[[length(subgroup_cases) + 1]] <- list(
            dataset = nm, measure = measure, method = method, hksj = hksj, column = col,
            values = list(subgroups = per, q_between = q$QE, q_between_df = length(lv) - 1, q_between_pval = q$QEp))
        }
      }
    }
  }
}

ref <- list(generated_by = "validation/metareg_reference.R",
            metafor_version = as.character(packageVersion("metafor")), r_version = R.version.string,
            control = ctrl, cases = cases, subgroup_cases = subgroup_cases)
writeLines(toJSON(ref, auto_unbox = TRUE, digits = NA, pretty = TRUE, null = "null"),
           file.path(out_dir, "metareg_reference.json"))
cat("wrote", length(cases), "meta-regression and", length(subgroup_cases), "subgroup cases\n")
