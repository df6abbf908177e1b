"""Sphinx configuration for the trio_ws documentation.

Build it with warnings as errors, in nitpicky mode, as CI and ``tests/test_docs.py`` do::

    python -m sphinx -W -n --keep-going -b html docs docs/_build/html

The build needs no network: intersphinx reads the inventories in ``_inventories/``.
"""

from __future__ import annotations

from typing import Any

from docutils import nodes

import trio_ws

project = "trio_ws"
author = "the trio_ws authors"
copyright = "the trio_ws authors"
release = trio_ws.__version__
version = release

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.intersphinx",
    "sphinxcontrib_trio",
]

exclude_patterns = ["_build", "_inventories"]
nitpicky = True
# coredis publishes no Sphinx inventory: its client class, in trio_ws.redis's signatures,
# cannot be linked.
nitpick_ignore = [("py:class", "coredis.client.basic.Redis")]
default_role = "py:obj"
add_module_names = False

html_theme = "furo"
html_title = f"trio_ws {release}"

# -- autodoc -------------------------------------------------------------------------------

# Sphinx 9 rewrote autodoc; sphinxcontrib-trio still plugs into the class-based documenters,
# which it needs to mark connect() "async with" and coroutines "await".
autodoc_use_legacy_class_based = True
autodoc_member_order = "bysource"
autodoc_preserve_defaults = True
autodoc_typehints = "description"
autodoc_typehints_description_target = "all"
python_use_unqualified_type_names = True

# Our modules use ``from __future__ import annotations``: each annotation is a string that
# autodoc evaluates in its module. These names are type aliases (documented as data) or
# imported only under TYPE_CHECKING, so they are mapped to the documented objects: signatures
# read ``Data``, ``HeadersLike | None``, and link there instead of expanding the alias.
autodoc_type_aliases = {
    "Data": "trio_ws.connection.Data",
    "BytesLike": "trio_ws.connection.BytesLike",
    "Address": "trio_ws.connection.Address",
    "LoggerLike": "trio_ws.connection.LoggerLike",
    "HeadersLike": "trio_ws.http.HeadersLike",
    "Handler": "trio_ws.server.Handler",
    "ProcessRequest": "trio_ws.server.ProcessRequest",
    "ProcessResponse": "trio_ws.server.ProcessResponse",
    "SelectSubprotocol": "trio_ws.server.SelectSubprotocol",
    "Origin": "trio_ws.server.Origin",
    "Stats": "trio_ws.stats.Stats",
    "Endpoint": "trio_ws.router.Endpoint",
    "werkzeug.routing.Map": "werkzeug.routing.Map",
    "Request": "trio_ws.http.Request",
    "Response": "trio_ws.http.Response",
}

napoleon_google_docstring = True
napoleon_numpy_docstring = False

# -- intersphinx, offline ------------------------------------------------------------------

# The build machines have no internet access, so intersphinx never downloads an objects.inv:
# it reads the small inventories in _inventories/ (written by _inventories/generate.py), which
# list the Python, trio and wsproto objects our pages reference, with their real URLs. A
# reference missing from them fails the nitpicky build; add it to generate.py and rerun it.
intersphinx_mapping = {
    "python": ("https://docs.python.org/3", "_inventories/python.inv"),
    "trio": ("https://trio.readthedocs.io/en/stable", "_inventories/trio.inv"),
    "wsproto": ("https://python-hyper.org/projects/wsproto/en/stable", "_inventories/wsproto.inv"),
    "werkzeug": ("https://werkzeug.palletsprojects.com/en/stable", "_inventories/werkzeug.inv"),
}

# -- adjustments ---------------------------------------------------------------------------


def _patch_type_alias_repr() -> None:
    """Write an aliased name inside a union as the name itself.

    Sphinx evaluates ``HeadersLike | None`` with each alias of ``autodoc_type_aliases`` replaced
    by a ``TypeAliasForwardRef``, then falls back to ``repr()`` to write it:
    ``TypeAliasForwardRef('trio_ws.http.HeadersLike') | None``, which nothing can link to. With
    this repr the type reads ``HeadersLike | None`` and links to the alias.
    """
    from sphinx.util import inspect as sphinx_inspect

    forward_ref = getattr(sphinx_inspect, "TypeAliasForwardRef", None)
    if forward_ref is not None:
        forward_ref.__repr__ = lambda self: str(self.name)


def _patch_napoleon_attribute_types() -> None:
    """Keep the first line of an attribute's or property's docstring whole.

    Napoleon reads ``"A message: str for a text frame, ..."`` as the inline type ``A message``.
    Our docstrings never give an inline type (autodoc takes it from the annotation), and by
    house style they often open with "what it is: detail".
    """
    from sphinx.ext.napoleon.docstring import GoogleDocstring

    def consume_inline_attribute(self: GoogleDocstring) -> tuple[str, list[str]]:
        lines = [self._lines.next(), *self._dedent(self._consume_to_end())]
        return "", self.__class__(lines, self._config).lines()

    GoogleDocstring._consume_inline_attribute = consume_inline_attribute  # type: ignore[method-assign]


_patch_type_alias_repr()
_patch_napoleon_attribute_types()

#: Classes that users get from trio_ws and never create: their constructors' parameters
#: (a trio stream, private handshake state) are not part of the API, so no signature is shown.
_NOT_CONSTRUCTED = {
    "trio_ws.testing.MemoryServer",
    "trio_ws.connection.Connection",
    "trio_ws.client.ClientConnection",
    "trio_ws.server.Server",
    "trio_ws.server.ServerConnection",
}


def _hide_constructor(
    app: Any, what: str, name: str, obj: Any, options: Any, signature: Any, return_annotation: Any
) -> tuple[str, None] | None:
    if what == "class" and name in _NOT_CONSTRUCTED:
        return "", None
    return None


def _tidy_typehint_fields(app: Any, domain: str, objtype: str, contentnode: Any) -> None:
    """Tidy the fields autodoc adds to describe types.

    Autodoc appends "Parameters" after the docstring's own fields ("Raises"); they move first,
    as in a signature. And these go:

    - "Return type: None" on every method that returns nothing.
    - "Return type: AsyncGenerator[...]" on an ``async with`` function: ``connect()`` is an
      async generator wrapped by ``asynccontextmanager``, and its annotation describes the
      generator, not what ``async with ... as ws`` gives (the docstring says that).
    - The constructor's parameters on the classes in ``_NOT_CONSTRUCTED``.
    """
    if domain != "py" or not isinstance(contentnode.parent, nodes.Element):
        return
    signature = contentnode.parent[0]
    fullname = f"{signature.get('module')}.{signature.get('fullname')}"
    async_with = signature.astext().startswith("async with ")
    # The fields are still raw here (":rtype:", ":param x:", ":type x:"); the Python domain
    # turns them into "Return type" and "Parameters" later.
    for field in list(contentnode.findall(nodes.field)):
        kind, body = field[0].astext().split(" ", 1)[0], field[1].astext()
        useless_rtype = kind == "rtype" and (body == "None" or async_with)
        private_param = kind in ("param", "type") and fullname in _NOT_CONSTRUCTED
        if useless_rtype or private_param:
            field.parent.remove(field)
    for field_list in list(contentnode.findall(nodes.field_list)):
        if not field_list.children:
            field_list.parent.remove(field_list)
            continue
        fields = list(field_list.children)
        params = [f for f in fields if f[0].astext().split(" ", 1)[0] in ("param", "type")]
        field_list.children = params + [f for f in fields if f not in params]


def _resolve_package_face(app: Any, env: Any, node: Any, contnode: Any) -> Any:
    """Resolve ``trio_ws.connect``, ``trio_ws.Connection.send``... in the object's home module.

    ``trio_ws/__init__.py`` only re-exports: each public object is documented once, on the
    reference page of the module that defines it (``trio_ws.client.connect``). Pages and
    docstrings may still write the name users import, ``trio_ws.connect``.
    """
    if node.get("refdomain") != "py":
        return None
    package, _, rest = node.get("reftarget", "").partition(".")
    name = rest.split(".", 1)[0]  # "Connection" in "trio_ws.Connection.send"
    if package != "trio_ws" or name not in trio_ws.__all__:
        return None
    module = getattr(getattr(trio_ws, name), "__module__", None)
    if not isinstance(module, str) or module == "trio_ws":
        return None
    node["reftarget"] = f"{module}.{rest}"
    return env.get_domain("py").resolve_xref(
        env, node["refdoc"], app.builder, node["reftype"], node["reftarget"], node, contnode
    )


def setup(app: Any) -> None:
    app.connect("autodoc-process-signature", _hide_constructor)
    # After autodoc has added the types (priority 500).
    app.connect("object-description-transform", _tidy_typehint_fields, priority=600)
    app.connect("missing-reference", _resolve_package_face)
