"""billing_core.domain.text: what a database cannot store (a NUL: PostgreSQL; a lone
surrogate: any UTF-8 encoder) is recognised, and shown replaced."""
from billing_core.domain.text import printable, unstorable


def test_nul_and_lone_surrogates_are_unstorable_and_printed_replaced() -> None:
    for bad in ("a\x00b", "\ud800", "x\udfffy"):
        assert unstorable(bad)
    for fine in ("plain", "Zürich 🙂", "tab\tand\nnewline", "", 42, None):
        assert not unstorable(fine)
    assert printable("a\x00b\udc80c") == "a\ufffdb\ufffdc"
    assert printable("🙂") == "🙂"
