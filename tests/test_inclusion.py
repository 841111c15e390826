"""Inclusion rules: one study per overlap group (two-arm first, then larger total), --all-studies,
--exclude-basis; every result says which rule was applied and what was left out."""

import pytest

from rescuemeta.data import load_studies, parse_exclude_basis, select
from rescuemeta.errors import InputError

CSV = """study_id,outcome,events_treat,total_treat,events_control,total_control,overlap_group,count_basis
A,mortality,5,100,,,G1,reported
B,mortality,3,40,6,40,G1,reported
C,mortality,4,60,8,70,G1,approximate
D,mortality,2,30,4,30,,from_percent
E,mortality,1,20,,,,denominator_fitted
F,mortality,9,200,,,G2,reported
G,mortality,2,50,,,G2,reported
"""


@pytest.fixture
def table(tmp_path):
    p = tmp_path / "s.csv"
    p.write_text(CSV)
    return load_studies(p)


def test_dedup_prefers_two_arm_then_larger_total(table):
    s = select(table, "mortality", arms="one")
    # G1: B and C are two-arm, C has the larger total (130 > 80) although A has the largest treat arm
    assert s.study_ids == ["C", "D", "E", "F"]
    reasons = dict(s.excluded)
    assert reasons["A"] == "overlap_group G1: C kept"
    assert reasons["G"] == "overlap_group G2: F kept"
    assert "one study per overlap_group" in s.rule


def test_two_arm_selection_keeps_comparative_rows(table):
    s = select(table, "mortality", arms="two")
    assert s.study_ids == ["C", "D"]
    assert dict(s.excluded)["E"] == "no control arm"
    ai, n1i, ci, n2i = s.counts()
    assert list(ci) == [8, 4] and list(n2i) == [70, 30]


def test_all_studies_turns_dedup_off(table):
    s = select(table, "mortality", arms="one", all_studies=True)
    assert s.k == 7
    assert "all studies" in s.rule


def test_exclude_basis(table):
    s = select(table, "mortality", arms="one", exclude_basis=("approximate", "denominator_fitted"))
    # C is gone, so B is the G1 representative
    assert s.study_ids == ["B", "D", "F"]
    assert ("C", "count_basis approximate") in s.excluded
    assert "excluding count_basis approximate, denominator_fitted" in s.rule


def test_parse_exclude_basis():
    assert parse_exclude_basis("approximate, denominator_fitted") == ("approximate", "denominator_fitted")
    assert parse_exclude_basis(None) == ()
    with pytest.raises(InputError):
        parse_exclude_basis("approx")


def test_rescue_data_mortality_rule():
    t = load_studies("data/studies.csv")
    s = select(t, "mortality", arms="two")
    # KOR-network: Chang2018 (two-arm) kept over Park2025 and BaekRegistry (single-arm);
    # US-posterior: Mohammaden2023 (146 patients) kept over PCSEARCH2024 (119)
    assert "Chang2018" in s.study_ids and "Mohammaden2023" in s.study_ids
    assert "PCSEARCH2024" not in s.study_ids
    assert s.describe()["k"] == s.k == 5


def test_shipped_table_loads_with_all_provenance():
    t = load_studies("data/studies.csv")
    f = t.frame
    assert len(f) == 53 and f["study_id"].nunique() == 20
    for col in ["source_url", "source_quote", "count_basis", "caveat", "overlap_group"]:
        assert col in f.columns
    assert set(f["count_basis"]) == {"reported", "from_percent", "denominator_fitted", "approximate"}
    assert len(t.sha256) == 64


def test_bom_and_crlf_accepted(tmp_path):
    p = tmp_path / "bom.csv"
    p.write_bytes(b"\xef\xbb\xbf" + CSV.replace("\n", "\r\n").encode())
    t = load_studies(p)
    assert list(t.frame.columns[:2]) == ["study_id", "outcome"] and len(t.frame) == 7
