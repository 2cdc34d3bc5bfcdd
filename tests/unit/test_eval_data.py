"""The eval's labelled data set (bench/eval/data/) stays sound as people edit it."""

from bench.eval import corpus


def test_eval_data_set_passes_its_checks() -> None:
    assert corpus.check(corpus.read_rows()) == []


def test_checker_catches_a_paraphrase_that_shares_a_word() -> None:
    rows = corpus.read_rows()
    query = next(q for q in rows["queries"] if q["kind"] == "paraphrase")
    memory = next(m for m in rows["memories"] if m["id"] == query["relevant"][0])
    query["query"] += " " + memory["content"].split()[-1]
    assert any(p.startswith(query["id"]) for p in corpus.check(rows))
