"""The studio's template contract: each template uses exactly the fields of the context it is rendered with.

Pages are rendered with the dataclass ``PAGE_CONTEXTS`` names, partials with the one ``PARTIAL_CONTEXTS``
names (:mod:`avtomatika.studio.partial_contexts`). From each template's syntax tree (Jinja's own parser):

- the names it reads and does not bind itself (``{% set %}``, ``{% with %}``, ``{% for %}``, macro
  parameters, imports) must be fields (or properties) of its context, or globals of the environment;
- every field of a context must be read by a template rendered with it (or by one it includes), or by the
  context's JSON twin (``to_json``): a field nothing shows is a field to remove;
- where a template includes a partial, the partial's required fields (those without a default) must be
  fields of the including template's context or names it binds (a ``{% with %}`` around the include),
  as far as the partial reads them (a page's context declared for its partials is more than each needs).

Names are collected flow-insensitively (a name bound anywhere in a template counts as bound), which is
what lets a partial set a name in one branch and read it in another without a false alarm.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Iterable, Mapping
from dataclasses import MISSING, dataclass, field, fields

import jinja2
import pytest
from jinja2 import nodes

from avtomatika.studio.contexts import PAGE_CONTEXTS
from avtomatika.studio.partial_contexts import PARTIAL_CONTEXTS
from avtomatika.studio.render import TEMPLATES_DIR, partials
from avtomatika.studio.sse import SseEvent

#: Templates of macros only, imported ``with context``: they read globals and ``user`` alone.
LIBRARIES = frozenset({"_macros.html", "_line.html"})
#: Every template is rendered with the session as ``user`` (render_string adds it).
RENDERED_WITH = frozenset({"user"})
#: Pages (and base.html, which they extend) also get ``layout``, built from the context's ``title``.
PAGE_EXTRAS = frozenset({"layout"})
#: Fields the renderer reads itself: a page's ``title`` becomes ``layout.title``.
READ_BY_RENDERER = frozenset({"title"})
#: Names Jinja defines inside loops, macros and blocks.
JINJA_NAMES = frozenset({"loop", "caller", "varargs", "kwargs", "super", "self"})


@dataclass(slots=True)
class Parsed:
    """What one template reads, binds and includes."""

    reads: set[str]
    binds: set[str]
    includes: list[str]
    extends: list[str] = field(default_factory=list)

    @property
    def free(self) -> set[str]:
        return self.reads - self.binds - JINJA_NAMES


def parse(env: jinja2.Environment, name: str) -> Parsed:
    source, _, _ = env.loader.get_source(env, name)  # type: ignore[union-attr]
    tree = env.parse(source)
    reads = {n.name for n in tree.find_all(nodes.Name) if n.ctx == "load"}
    binds = {n.name for n in tree.find_all(nodes.Name) if n.ctx in ("store", "param")}
    binds |= {n.target for n in tree.find_all(nodes.Import)}
    binds |= {n.name for n in tree.find_all(nodes.Macro)}
    for found in tree.find_all(nodes.FromImport):
        binds |= {alias if isinstance(alias, str) else alias[1] for alias in found.names}
    includes = [n.template.value for n in tree.find_all(nodes.Include) if isinstance(n.template, nodes.Const)]
    extends = [n.template.value for n in tree.find_all(nodes.Extends) if isinstance(n.template, nodes.Const)]
    return Parsed(reads, binds, includes, extends)


def names_of(context: type) -> set[str]:
    """A context's fields and properties: what a template may read from it."""
    properties = {n for klass in context.__mro__ for n, v in vars(klass).items() if isinstance(v, property)}
    return {f.name for f in fields(context)} | properties


def required(context: type) -> set[str]:
    return {f.name for f in fields(context) if f.default is MISSING and f.default_factory is MISSING}


def read_by_json(context: type) -> set[str]:
    """The fields the context's JSON twin reads (``self.<name>`` in ``to_json``)."""
    to_json = getattr(context, "to_json", None)
    return set(re.findall(r"self\.(\w+)", inspect.getsource(to_json))) if to_json is not None else set()


def problems(
    env: jinja2.Environment,
    pages: Mapping[str, type],
    partials: Mapping[str, type],
    libraries: Iterable[str] = LIBRARIES,
) -> list[str]:
    """Every way the templates of ``env`` and the declared contexts disagree, in words."""
    found: list[str] = []
    parsed = {name: parse(env, name) for name in env.list_templates()}
    declared = {**partials, **pages}
    glob = set(env.globals) | RENDERED_WITH
    libraries = set(libraries)
    for name in sorted(set(parsed) - set(declared) - libraries):
        if not any(name in p.extends for p in parsed.values()):
            found.append(f"{name} has no declared context")
    for name in sorted(libraries & set(parsed)):
        for unknown in sorted(parsed[name].free - glob):
            found.append(f"{name} (macros) reads {unknown!r}, which no template is given")
    for name, context in sorted(declared.items()):
        available = names_of(context) | glob | (PAGE_EXTRAS if name in pages else set())
        for unknown in sorted(parsed[name].free - available):
            found.append(f"{name} reads {unknown!r}, which {context.__name__} does not have")
        for base in parsed[name].extends:
            for unknown in sorted(parsed[base].free - available):
                found.append(f"{base} (extended by {name}) reads {unknown!r}, which {context.__name__} does not have")
        for partial in parsed[name].includes:
            if partial not in partials:
                found.append(f"{name} includes {partial}, which has no declared context")
                continue
            given = names_of(context) | parsed[name].binds | glob
            for missing in sorted(required(partials[partial]) & parsed[partial].free - given):
                found.append(f"{name} includes {partial} without {missing!r} ({partials[partial].__name__} needs it)")
    found += _unread_fields(parsed, declared, pages)
    return found


def _unread_fields(parsed: Mapping[str, Parsed], declared: Mapping[str, type], pages: Mapping[str, type]) -> list[str]:
    read: dict[type, set[str]] = {}
    for name, context in declared.items():
        seen: set[str] = set()
        _reads_with_includes(parsed, name, seen, read.setdefault(context, set()))
        if name in pages:
            read[context] |= READ_BY_RENDERER
    found = []
    for context, names in sorted(read.items(), key=lambda item: item[0].__name__):
        unread = {f.name for f in fields(context)} - names - read_by_json(context)
        found += [f"{context.__name__}.{n} is read by no template nor its JSON twin" for n in sorted(unread)]
    return found


def _reads_with_includes(parsed: Mapping[str, Parsed], name: str, seen: set[str], into: set[str]) -> None:
    if name in seen or name not in parsed:
        return
    seen.add(name)
    into |= parsed[name].reads
    for other in [*parsed[name].includes, *parsed[name].extends]:
        _reads_with_includes(parsed, other, seen, into)


# -- the studio's templates -------------------------------------------------------------------------------
def test_every_template_uses_exactly_the_fields_of_its_context() -> None:
    assert problems(partials(), PAGE_CONTEXTS, PARTIAL_CONTEXTS) == []


def test_every_declared_template_exists() -> None:
    on_disk = {p.name for p in TEMPLATES_DIR.glob("*.html")}
    assert set(PAGE_CONTEXTS) | set(PARTIAL_CONTEXTS) <= on_disk


def test_every_sse_event_has_its_partial_and_every_sse_swap_names_an_event() -> None:
    for event in SseEvent:
        assert event.partial in PARTIAL_CONTEXTS, f"event {event.value} carries {event.partial}, which is not declared"
    swapped = {m for p in TEMPLATES_DIR.glob("*.html") for m in re.findall(r'sse-swap="([^"]+)"', p.read_text())}
    assert swapped <= {e.value for e in SseEvent}, f"sse-swap names no event: {swapped - {e.value for e in SseEvent}}"


# -- the check itself, on templates broken on purpose --------------------------------------------------------
@dataclass(slots=True)
class Thing:
    title: str
    name: str
    note: str = ""


@dataclass(slots=True)
class Item:
    item: str
    new: bool = False


def broken(templates: dict[str, str]) -> list[str]:
    env = jinja2.Environment(
        loader=jinja2.DictLoader({"base.html": "{{ layout }}{% block body %}{% endblock %}", **templates})
    )
    pages = {"thing.html": Thing}
    declared = {"_item.html": Item} if "_item.html" in templates else {}
    return problems(env, pages, declared)


GOOD = '{% extends "base.html" %}{% block body %}{{ name }} {{ note }}{% endblock %}'


def test_the_check_passes_a_template_that_matches_its_context() -> None:
    assert broken({"thing.html": GOOD}) == []


def test_a_template_reading_a_field_its_context_lacks_fails() -> None:
    found = broken({"thing.html": GOOD.replace("{{ note }}", "{{ note }} {{ colour }}")})
    assert found == ["thing.html reads 'colour', which Thing does not have"]


def test_a_field_no_template_reads_fails() -> None:
    found = broken({"thing.html": GOOD.replace(" {{ note }}", "")})
    assert found == ["Thing.note is read by no template nor its JSON twin"]


def test_names_a_template_binds_itself_are_not_fields() -> None:
    body = '{% set colour = "red" %}{% for n in [name] %}{{ n }}{% endfor %}{{ colour }} {{ note }}'
    assert broken({"thing.html": GOOD.replace("{{ name }} {{ note }}", body)}) == []


def test_a_partial_included_without_its_required_field_fails() -> None:
    page = GOOD.replace("{{ note }}", '{{ note }}{% include "_item.html" %}')
    found = broken({"thing.html": page, "_item.html": "{{ item }}{{ new }}"})
    assert found == ["thing.html includes _item.html without 'item' (Item needs it)"]


def test_a_partial_given_its_fields_by_a_with_passes() -> None:
    page = GOOD.replace("{{ note }}", '{{ note }}{% with item = name %}{% include "_item.html" %}{% endwith %}')
    assert broken({"thing.html": page, "_item.html": "{{ item }}{{ new }}"}) == []


def test_a_template_with_no_declared_context_fails() -> None:
    found = broken({"thing.html": GOOD, "_stray.html": "{{ anything }}"})
    assert found == ["_stray.html has no declared context"]


@pytest.mark.parametrize("library", sorted(LIBRARIES))
def test_the_macro_libraries_read_only_globals(library: str) -> None:
    assert parse(partials(), library).free <= set(partials().globals) | RENDERED_WITH
