"""hfssl.data.synthetic: key -> value documents whose values can only be known from the same document."""

from hfssl.data import synthetic


def _lines(text: str) -> list[tuple[str, str]]:
    return [tuple(line.split(" ")) for line in text.split("\n")]


def test_each_document_is_one_consistent_mapping():
    docs = list(synthetic.key_value_documents(200, seed=3)["text"])
    for text in docs:
        lines = _lines(text)
        assert len(lines) == synthetic.LINES_PER_DOC
        mapping = dict(lines)
        assert len(mapping) <= synthetic.KEYS_PER_MAPPING
        assert set(mapping) <= set(synthetic.KEYS) and set(mapping.values()) <= set(synthetic.VALUES)
        assert all(mapping[k] == v for k, v in lines)  # a key keeps its value within a document
    # across documents the mappings change: the value of a key cannot be memorised
    values_of_a = {dict(_lines(text)).get("a") for text in docs} - {None}
    assert len(values_of_a) > 1


def test_same_seed_same_documents_other_seed_other_documents():
    def texts(seed):
        return list(synthetic.key_value_documents(20, seed=seed)["text"])

    assert texts(1) == texts(1) and texts(1) != texts(2)


def test_documents_for_chars_reaches_the_requested_size():
    docs = list(synthetic.documents_for_chars(5000, seed=0)["text"])
    total = sum(len(t) + 1 for t in docs)
    assert 5000 <= total < 5000 + max(len(t) + 1 for t in docs)
    assert len(synthetic.documents_for_chars(0, seed=0)) == 1
