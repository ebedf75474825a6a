"""The view's queries and request parsing on a synthetic catalog in the real schema (2,000 tracks, no audio): the funnel
is the catalog's, filters narrow to exactly the rows SQL finds, sorting and paging walk one order without gaps or
repeats, a text search matches its words literally (LIKE wildcards escaped), and every malformed parameter is a
BadRequest naming it."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest

from songcorpus.testing.synthetic_catalog import write_synthetic_catalog
from songcorpus.view import corpus_queries
from songcorpus.view.corpus import Corpus
from songcorpus.view.errors import BadRequest, NotFound
from songcorpus.view.query_params import parse_table_query


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory) -> Path:
    return write_synthetic_catalog(tmp_path_factory.mktemp("view_catalog") / "corpus", 2000)


@pytest.fixture(scope="module")
def corpus(synthetic):
    c = Corpus.open(synthetic)
    yield c
    c.close()


@pytest.fixture(scope="module")
def sql(synthetic):
    con = duckdb.connect(str(synthetic / "catalog.duckdb"), read_only=True)
    yield lambda q, args=(): con.execute(q, list(args)).fetchall()
    con.close()


def page(corpus, table: str, **params):
    specs = corpus_queries.table_specs(corpus)
    query = parse_table_query(specs[table], [(k.replace("__", "."), str(v)) for k, v in params.items()],
                              corpus_queries.known_values(corpus))
    return corpus_queries.table_page(corpus, query)


def test_funnel_is_the_catalogs_and_counts_every_input(corpus, sql):
    rows = corpus_queries.funnel(corpus)
    assert [(r["status"], r["stage"], r["reason_code"], r["tracks"]) for r in rows] == \
        [r[:4] for r in sql("SELECT status, stage, reason_code, tracks FROM funnel")]
    assert sum(r["tracks"] for r in rows) == sql("SELECT count(*) FROM tracks")[0][0] == 2000
    assert corpus_queries.totals(corpus)["windows"] == sql("SELECT count(*) FROM windows")[0][0]


def test_filters_narrow_to_the_rows_sql_finds(corpus, sql):
    everything = page(corpus, "tracks")
    assert everything.total == 2000
    got = page(corpus, "tracks", status="rejected", reason="low_snr", per=500)
    want = sql("SELECT track_id FROM tracks WHERE status = 'rejected' AND reason_code = 'low_snr'")
    assert 0 < got.total == len(want) < everything.total
    assert {r["track_id"] for r in got.rows} == {t for (t,) in want}
    ranged = page(corpus, "tracks", min__snr_db=0.6, max__snr_db=0.9, per=500)
    assert ranged.total == sql("SELECT count(*) FROM tracks WHERE snr_db BETWEEN 0.6 AND 0.9")[0][0] > 0
    assert all(0.6 <= r["snr_db"] <= 0.9 for r in ranged.rows)  # the filtered score is shown as a column
    form = page(corpus, "tracks", score="snr_db", min=0.6, max=0.9, per=500)  # the form's spelling, same query
    assert form.total == ranged.total and form.query.params() == ranged.query.params()
    augmented = page(corpus, "windows", augmented="yes")
    assert augmented.total == sql("SELECT count(*) FROM windows WHERE augmentation_json IS NOT NULL")[0][0] > 0
    one = sql("SELECT track_id, count(*) FROM windows GROUP BY track_id ORDER BY track_id LIMIT 1")[0]
    assert page(corpus, "windows", track=one[0]).total == one[1]
    assert page(corpus, "windows", split="test", min__snr_db=0.5).total == \
        sql("SELECT count(*) FROM windows w JOIN tracks t USING (track_id) WHERE w.split = 'test' AND t.snr_db >= 0.5")[0][0]


def test_sorting_and_paging_walk_one_order(corpus, sql):
    want = [t for (t,) in sql("SELECT track_id FROM tracks ORDER BY snr_db DESC NULLS LAST, track_id")]
    seen = []
    for n in range(1, 5):
        p = page(corpus, "tracks", sort="snr_db", order="desc", per=100, page=n)
        assert p.first == (n - 1) * 100 + 1 and p.last == n * 100 and p.pages == 20
        seen += [r["track_id"] for r in p.rows]
    assert seen == want[:400]
    beyond = page(corpus, "tracks", page=999)
    assert beyond.rows == [] and beyond.total == 2000


def test_text_search_is_literal(corpus, sql):
    hits = page(corpus, "tracks", q="river", per=500)
    want = sql("SELECT count(*) FROM tracks WHERE title ILIKE '%river%' OR caption ILIKE '%river%' "
               "OR lyrics ILIKE '%river%' OR artist ILIKE '%river%' OR source ILIKE '%river%'")[0][0]
    assert 0 < hits.total == want < 2000
    assert page(corpus, "tracks", q="%").total == 0  # a LIKE wildcard is a character here
    assert page(corpus, "tracks", q="_").total == 0
    assert page(corpus, "tracks", q="'; DROP TABLE tracks; --").total == 0
    assert sql("SELECT count(*) FROM tracks")[0][0] == 2000
    windows = page(corpus, "windows", q="RIVER")  # case does not matter; a window matches by its track or its key
    assert windows.total == sql("SELECT count(*) FROM windows w JOIN tracks t USING (track_id) WHERE "
                                "t.title ILIKE '%river%' OR t.caption ILIKE '%river%' OR t.lyrics ILIKE '%river%' "
                                "OR w.key ILIKE '%river%'")[0][0] > 0
    assert page(corpus, "windows", q="_0003").total == sql("SELECT count(*) FROM windows WHERE key LIKE '%\\_0003%' "
                                                           "ESCAPE '\\'")[0][0] > 0


@pytest.mark.parametrize("params, says", [
    ({"page": "abc"}, "page must be a whole number"),
    ({"page": "0"}, "page must be from 1"),
    ({"page": "-3"}, "page must be a whole number"),
    ({"per": "7"}, "per must be one of"),
    ({"sort": "bogus"}, "sort='bogus' is not a column"),
    ({"sort": "snr_db; DROP TABLE tracks"}, "is not a column"),
    ({"order": "sideways"}, "order must be asc or desc"),
    ({"status": "' OR 1=1 --"}, "is not a value this corpus holds"),
    ({"split": "nope"}, "is not a value this corpus holds"),
    ({"min.snr_db": "loud"}, "must be a number"),
    ({"min.snr_db": "nan"}, "finite"),
    ({"min.snr_db": "2", "max.snr_db": "1"}, "is above"),
    ({"min.title": "1"}, "not a numeric column"),
    ({"colour": "red"}, "unknown parameter 'colour'"),
    ({"q": "x" * 300}, "longer than 200"),
    ({"q": "a\x00b"}, "control characters"),
])
def test_malformed_parameters_are_bad_requests(corpus, params, says):
    with pytest.raises(BadRequest, match=says.replace("(", r"\(")):
        page(corpus, "tracks", **{k.replace(".", "__"): v for k, v in params.items()})


def test_repeated_parameter_and_unknown_keys_are_refused(corpus):
    specs = corpus_queries.table_specs(corpus)
    with pytest.raises(BadRequest, match="given twice"):
        parse_table_query(specs["tracks"], [("status", "accepted"), ("status", "rejected")], {"status": {"accepted"}})
    with pytest.raises(NotFound):
        corpus_queries.track(corpus, "t-not-there")
    with pytest.raises(NotFound):
        corpus_queries.window(corpus, "../../etc/passwd")
    with pytest.raises(NotFound):
        corpus.member("nope", "mix.flac")


def test_overview_figures_match_the_catalog(corpus, sql):
    hists = {h["column"]: h for h in corpus_queries.score_histograms(corpus)}
    snr = hists["snr_db"]
    assert sum(a + r for a, r in snr["bins"]) == snr["n"] == sql("SELECT count(snr_db) FROM tracks")[0][0]
    assert sum(a for a, _ in snr["bins"]) == sql("SELECT count(snr_db) FROM tracks WHERE status = 'accepted'")[0][0]
    assert [g.name for g in snr["gates"]] == ["low_snr"]  # the lite config's gate on it, drawn with it
    balance = corpus_queries.balance(corpus)
    assert {r["value"]: r["tracks"] for r in balance["split"]} == \
        dict(sql("SELECT split, count(*) FROM tracks WHERE status = 'accepted' GROUP BY split"))
    genres = {r["value"]: r["tracks"] for r in balance["genre"]}
    assert genres["pop"] == sql("SELECT count(*) FROM tracks WHERE status = 'accepted' AND "
                                "list_contains(string_split(tags, ','), 'pop')")[0][0]
