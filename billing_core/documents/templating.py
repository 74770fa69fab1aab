"""The templates: Jinja2 files, the company's folder first, the built-in ones behind it.

Rules kept here
- A template is looked up in ``templates_dir`` (``[documents] templates_dir``) first, then in
  the built-in folder beside this module, file by file: a company may replace only
  ``invoice.html`` and keep the built-in ``base.html`` it extends.
- Autoescaping is on (values from the CRM are text, never markup) and an undefined variable
  is an error, not an empty string.
- Any error of a template, when it is loaded or rendered, is a ``TemplateError`` naming the
  template file and its line, e.g. ``template='/etc/lb/invoice.html:12': 'dict object' has no
  attribute 'totl'``; nothing else is affected (other documents render).
- ``digest`` is the SHA-256 of the sources a kind's template is made of (itself and every
  template it extends or includes that the loader has seen), so the same document rendered
  with the same templates gets the same PDF id.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from types import TracebackType
from typing import Any

import jinja2
import jinja2.meta

from billing_core.domain.errors import LedgerError

BUILTIN_DIR = Path(__file__).with_name("templates")


class TemplateError(LedgerError):
    """A document template cannot be loaded or rendered (a configuration problem)."""
    code = "template_error"

    def __init__(self, where: str, problem: str) -> None:
        super().__init__("template", where, problem)


class Templates:
    """The template set of one configuration (loaded once, compiled templates cached)."""

    def __init__(self, templates_dir: str | None = None) -> None:
        folders = [str(BUILTIN_DIR)]
        if templates_dir:
            custom = Path(templates_dir)
            if not custom.is_dir():
                raise TemplateError(str(custom), "is not a folder ([documents] templates_dir)")
            folders.insert(0, str(custom))
        self._loader = jinja2.FileSystemLoader(folders, encoding="utf-8")
        self._env = jinja2.Environment(loader=self._loader, autoescape=True,
                                       undefined=jinja2.StrictUndefined, auto_reload=False,
                                       trim_blocks=True, lstrip_blocks=True)
        self._digests: dict[str, str] = {}

    def path_of(self, name: str) -> str:
        """The file ``name`` is read from (the company's or the built-in one)."""
        for folder in self._loader.searchpath:
            candidate = Path(folder) / name
            if candidate.is_file():
                return str(candidate)
        return name

    def render(self, name: str, context: dict[str, Any]) -> str:
        try:
            return self._env.get_template(name).render(context)
        except jinja2.TemplateSyntaxError as exc:
            where = f"{exc.filename or self.path_of(exc.name or name)}:{exc.lineno}"
            raise TemplateError(where, exc.message or "syntax error") from None
        except jinja2.TemplateNotFound as exc:
            raise TemplateError(str(exc.name), "no such template in the templates folders "
                                f"({', '.join(self._loader.searchpath)})") from None
        except Exception as exc:    # noqa: BLE001 - any error of a template's code is its own
            raise TemplateError(_template_line(exc.__traceback__, self.path_of(name)),
                                f"{type(exc).__name__}: {exc}") from None

    def digest(self, name: str) -> str:
        """SHA-256 of the sources of template ``name`` and every template it pulls in."""
        if name not in self._digests:
            sha = hashlib.sha256()
            for part in sorted(self._sources(name, set())):
                sha.update(part.encode("utf-8"))
            self._digests[name] = sha.hexdigest()
        return self._digests[name]

    def _sources(self, name: str, seen: set[str]) -> list[str]:
        if name in seen:
            return []
        seen.add(name)
        try:
            source = self._loader.get_source(self._env, name)[0]
            refs = jinja2.meta.find_referenced_templates(self._env.parse(source))
        except jinja2.TemplateSyntaxError as exc:
            raise TemplateError(f"{exc.filename or self.path_of(name)}:{exc.lineno}",
                                exc.message or "syntax error") from None
        except jinja2.TemplateNotFound:
            return []
        out = [f"{name}\0{source}"]
        for ref in refs:
            if ref is not None:
                out.extend(self._sources(ref, seen))
        return out


def _template_line(tb: TracebackType | None, fallback: str) -> str:
    """``file:line`` of the innermost template frame of a rendering error's traceback (Jinja2
    rewrites tracebacks so that template frames carry the template's file and line)."""
    where = fallback
    while tb is not None:
        filename = tb.tb_frame.f_code.co_filename
        if filename.endswith((".html", ".htm", ".j2", ".jinja")):
            where = f"{filename}:{tb.tb_lineno}"
        tb = tb.tb_next
    return where
