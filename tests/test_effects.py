"""escalc: hand-computed effect sizes and metafor's continuity-correction conventions."""

import math

import pytest

from rescuemeta.effects import ContinuityCorrection, escalc


def test_log_or_and_variance_by_hand():
    # 10/50 vs 20/50: OR = (10*30)/(40*20)
    es = escalc("OR", [10], [50], [20], [50])
    assert es.yi[0] == pytest.approx(math.log(10 * 30 / (40 * 20)), rel=1e-12)
    assert es.vi[0] == pytest.approx(1 / 10 + 1 / 40 + 1 / 20 + 1 / 30, rel=1e-12)


def test_log_rr_rd_plo_by_hand():
    rr = escalc("RR", [10], [50], [20], [50])
    assert rr.yi[0] == pytest.approx(math.log(0.2 / 0.4))
    assert rr.vi[0] == pytest.approx(1 / 10 - 1 / 50 + 1 / 20 - 1 / 50)
    rd = escalc("RD", [10], [50], [20], [50])
    assert rd.yi[0] == pytest.approx(-0.2)
    assert rd.vi[0] == pytest.approx(0.2 * 0.8 / 50 + 0.4 * 0.6 / 50)
    plo = escalc("PLO", [10], [50])
    assert plo.yi[0] == pytest.approx(math.log(10 / 40))
    assert plo.vi[0] == pytest.approx(1 / 10 + 1 / 40)


def test_zero_cell_gets_half_added_to_all_four_cells_only_in_that_study():
    es = escalc("OR", [0, 5], [10, 10], [3, 5], [10, 10])
    assert es.yi[0] == pytest.approx(math.log((0.5 * 7.5) / (10.5 * 3.5)))
    assert es.yi[1] == pytest.approx(0.0)
    assert es.vi[1] == pytest.approx(4 / 5)  # untouched


def test_double_zero_dropped_by_default_kept_on_request():
    es = escalc("OR", [0, 2], [10, 10], [0, 3], [10, 10])
    assert not es.usable[0] and es.usable[1]
    kept = escalc("OR", [0, 2], [10, 10], [0, 3], [10, 10], cc=ContinuityCorrection(drop00=False))
    assert kept.usable[0] and kept.yi[0] == pytest.approx(0.0)
    # all events in both arms is a double-zero table too
    assert not escalc("RR", [10], [10], [8], [8]).usable[0]


def test_no_correction_leaves_zero_cell_studies_out():
    es = escalc("OR", [0, 2], [10, 10], [1, 3], [10, 10], cc=ContinuityCorrection(to="none"))
    assert not es.usable[0] and es.usable[1]


def test_if0all_and_all():
    a = escalc("OR", [0, 2], [10, 10], [1, 3], [10, 10], cc=ContinuityCorrection(to="if0all"))
    assert a.yi[1] == pytest.approx(math.log(2.5 * 7.5 / (8.5 * 3.5)))
    b = escalc("OR", [1, 2], [10, 10], [1, 3], [10, 10], cc=ContinuityCorrection(to="all", add=1))
    assert b.yi[0] == pytest.approx(0.0)
    assert b.vi[0] == pytest.approx(2 / 2 + 2 / 10)


def test_plo_zero_and_full():
    es = escalc("PLO", [0, 13], [13, 13])
    assert es.yi[0] == pytest.approx(math.log(0.5 / 13.5))
    assert es.yi[1] == pytest.approx(math.log(13.5 / 0.5))


def test_invalid_correction_rejected():
    with pytest.raises(ValueError):
        ContinuityCorrection(to="sometimes")
    with pytest.raises(ValueError):
        ContinuityCorrection(add=float("nan"))
