"""Customer documents (invoices, credit memos, debit memos, statements) as HTML and PDF.

The package itself imports nothing heavy (settings import ``options``); ``render.Renderer``
brings in Jinja2, Babel and ReportLab.

Rules kept here
- Rendering is a pure function of the document's data (``billing_core.service.document_data``),
  the templates and the options (seller, locale, page size): no clock, no database, no
  randomness. The same inputs give the same bytes, for HTML and for PDF (``pdf.py``: fixed
  metadata, the creation date is the document's date, the file id is derived from the
  document's kind, number, template digest and markup).
- One Jinja2 template per kind (``invoice.html``, ``credit_memo.html``, ``debit_memo.html``,
  ``statement.html``) makes both formats; a company replaces any of them, file by file, in
  ``[documents] templates_dir`` (``templating.py``). A template error is a ``TemplateError``
  naming the file and line.
- Templates see ``doc`` (the document data, amounts in minor units), ``seller``, ``language``
  and the formatting functions of ``formatting.Formats`` (``money``, ``unit_price``, ``date``,
  ``period``, ``percent``, ``quantity``) bound to the document's currency and locale.
"""
