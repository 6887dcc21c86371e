"""Cross-references in the package's docstrings that the API reference (pdoc) cannot link.

Run ``python docs/check_refs.py`` from the repository root; exits 1 listing each offender.

pdoc turns an rST role (``:class:`X```, ``:meth:`X.y```, ``:func:``, ``:mod:``, ``:attr:``, ``:data:``,
``:exc:``, ``:obj:``) into a link only when its target is a public, documented object that pdoc finds
either in the module (or class) the docstring belongs to, or by a full dotted name
(``:meth:`adaptive_retrieval.retriever.Retriever.search```); anything else renders as plain code, and
pdoc says nothing. This script asks pdoc's own link resolver about every role target, on every page
that renders the docstring (a class re-exported by a package is rendered, docstrings and all, on the
package's page too), so a renamed method or a name the module does not define shows up here.

pdoc knows neither Sphinx's ``~`` prefix nor its ``text <target>`` form: it prints the ``~`` and the
``<target>`` as they are written (``~adaptive_retrieval.ids.IdMap``), so both are reported too.

Fix: spell the target in full (without ``~``), or, for a private name or another library's, write it in
double backticks.
"""

from __future__ import annotations

import re
import sys
import warnings
from pathlib import Path

import pdoc.doc
import pdoc.render_helpers

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "adaptive_retrieval"
ROLE = re.compile(r"(?::py)?:(mod|func|data|const|class|meth|attr|exc|obj):`([^`]+)`")


def module_names() -> list[str]:
    """Every public module of the package, as the API reference documents them."""
    names = []
    for path in (ROOT / PACKAGE).rglob("*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        if not any(part.startswith("_") for part in name.split(".")):
            names.append(name)
    return sorted(names)


def is_public(doc: pdoc.doc.Doc) -> str:
    """pdoc's default template's rule, as its link resolver asks it (a non-empty string: public)."""
    return "yes" if not doc.name.startswith("_") or doc.name.startswith("__") else ""


def members(doc: pdoc.doc.Doc):
    yield doc
    for member in getattr(doc, "own_members", ()):
        if not isinstance(member, pdoc.doc.Module):
            yield from members(member)


def target_of(reference: str) -> str:
    """``a.b.c()`` -> ``a.b.c``."""
    return reference.strip().removesuffix("()")


def sphinx_only(reference: str) -> str:
    """What pdoc would print as written in a Sphinx-only spelling of a target (``""``: none)."""
    if reference.strip().startswith("~"):
        return "its ~ prefix"
    if re.fullmatch(r"(?s).*<.+>\s*", reference):
        return "its text <target> form"
    return ""


def main() -> int:
    import adaptive_retrieval

    for name in adaptive_retrieval.__all__:  # its names load on first use; pdoc reads them as they are
        getattr(adaptive_retrieval, name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        modules = {name: pdoc.doc.Module.from_name(name) for name in module_names()}
    found: dict[tuple[str, int, str], tuple[str, str]] = {}
    for name, module in modules.items():
        context = {"module": module, "all_modules": modules, "is_public": is_public}
        for doc in members(module):
            if not doc.docstring:
                continue
            if isinstance(doc, pdoc.doc.Module):
                namespace = ""
            elif isinstance(doc, pdoc.doc.Class):
                namespace = doc.qualname
            else:
                namespace = doc.qualname.rpartition(".")[0]
            for role, reference in ROLE.findall(doc.docstring):
                problem = sphinx_only(reference)
                if not problem:
                    html = pdoc.render_helpers.linkify(
                        context, f"<code>{target_of(reference)}</code>", namespace
                    )
                    problem = "" if "<a " in str(html) else "links nowhere"
                if problem:
                    source = doc.source_file or getattr(modules.get(doc.taken_from[0]), "source_file", None)
                    where = Path(source).relative_to(ROOT) if source else Path(name)
                    line = max(doc.source_lines[0], 1) if doc.source_lines else 1
                    key = (where.as_posix(), line, f":{role}:`{reference}`")
                    found.setdefault(key, (doc.fullname, problem))
    for (where, line, reference), (fullname, problem) in sorted(found.items()):
        what = "links nowhere" if problem == "links nowhere" else f"shows {problem} as text"
        print(f"{where}:{line}: {fullname}: {reference} {what}")
    if found:
        print(f"check_refs: FAILED ({len(found)} references pdoc cannot link as written)", file=sys.stderr)
        return 1
    print(f"check_refs: ok ({len(modules)} modules)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
