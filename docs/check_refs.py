"""Cross-references in the package's docstrings that the API reference (pdoc) cannot link.

Run ``python docs/check_refs.py`` from the repository root; exits 1 listing each offender.

pdoc turns an rST role (``:class:`X```, ``:meth:`X.y```, ``:func:``, ``:mod:``, ``:attr:``, ``:data:``,
``:exc:``, ``:obj:``) into a link only when its target is a public, documented object that pdoc finds
either in the module (or class) the docstring belongs to, or by a full dotted name
(``:meth:`~adaptive_retrieval.retriever.Retriever.search```); anything else renders as plain code, and
pdoc says nothing. This script asks pdoc's own link resolver about every role target, so a renamed method
or a name the module does not define shows up here. Fix: spell the target in full, or, for a private
name or another library's, write it in double backticks.
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
    """``~a.b.c()`` or ``text <a.b.c>`` -> ``a.b.c``."""
    inner = re.fullmatch(r".*<(.+)>", reference)
    return (inner.group(1) if inner else reference).strip().lstrip("~").removesuffix("()")


def main() -> int:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        modules = {name: pdoc.doc.Module.from_name(name) for name in module_names()}
    found: dict[tuple[str, int, str], str] = {}
    for name, module in modules.items():
        context = {"module": module, "all_modules": modules, "is_public": is_public}
        for doc in members(module):
            if not doc.docstring or (doc is not module and doc.modulename != name):
                continue  # an imported or inherited member: checked where it is written
            if isinstance(doc, pdoc.doc.Module):
                namespace = ""
            elif isinstance(doc, pdoc.doc.Class):
                namespace = doc.qualname
            else:
                namespace = doc.qualname.rpartition(".")[0]
            for role, reference in ROLE.findall(doc.docstring):
                html = pdoc.render_helpers.linkify(context, f"<code>{target_of(reference)}</code>", namespace)
                if "<a " not in str(html):
                    where = Path(doc.source_file).relative_to(ROOT) if doc.source_file else Path(name)
                    line = max(doc.source_lines[0], 1) if doc.source_lines else 1
                    found.setdefault((where.as_posix(), line, f":{role}:`{reference}`"), doc.fullname)
    for (where, line, reference), fullname in sorted(found.items()):
        print(f"{where}:{line}: {fullname}: {reference} links nowhere")
    if found:
        print(f"check_refs: FAILED ({len(found)} references pdoc cannot link)", file=sys.stderr)
        return 1
    print(f"check_refs: ok ({len(modules)} modules)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
