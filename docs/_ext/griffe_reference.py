"""Griffe extension for the API reference page (loaded by mkdocs.yml; not part of the package).

mkdocstrings reads the code statically; four things of this code base need help to read well:

- **attrs classes.** ``threads: int = attrs.field(default=2, validator=...)`` is shown as
  ``threads: int = 2`` (``factory=F`` as ``F()``, a field without default with no value),
  its "class-attribute" label is dropped (attrs fields live on instances), and the class
  gets the ``__init__`` attrs generates, so its heading reads ``BatchPolicy(*, max_messages:
  int = 2500, ...)``.
- **Emitter's signature** reads each default from ``EmitterConfig`` (``= DEFAULTS.threads``):
  the reference shows the default itself, taken from the ``EmitterConfig`` field.
- **Private constants** used as defaults or values (``= MAX_BATCH_MESSAGES``,
  ``= _DEFAULT_NAMING``) are shown as the value they stand for (``= 2500``,
  ``= EventNaming()``) when that value is a literal, arithmetic on literals or a call
  without arguments; attributes set in ``__init__`` (``self.setting = setting``) show no
  value.
- **Sphinx roles** (``:class:`EmitterConfig```, ``:meth:`flush```, ``:data:`X```) become
  inline code, linked to the name's entry when the reference documents it (an optional
  cross-reference: a private name stays plain code, with no warning).
"""

from __future__ import annotations

import ast
import re
from typing import Any, TypeGuard

import griffe

_ATTRS_DECORATORS = re.compile(r"^(attrs|attr)\.(frozen|define|mutable|s|attrs|dataclass)$")
_ATTRS_FIELD = {"attrs.field", "attr.ib", "attr.attrib", "attrs.attrib"}
_ROLE = re.compile(
    r":(?:py:)?(class|meth|func|attr|data|exc|mod|obj|const):`(~?)([\w.]+)(?:\(\))?`"
)
_CONFIG_DEFAULTS = "selligent_segment._config.DEFAULTS"
_CONFIG_CLASS = "selligent_segment._config.EmitterConfig"
# What looking a name up may raise: it is then not ours (or not known), and shown as is.
_NOT_FOUND = (KeyError, ValueError, griffe.GriffeError)
_KEYWORD: Any = griffe.ParameterKind.keyword_only
_POSITIONAL: Any = griffe.ParameterKind.positional_or_keyword


def _call_path(expr: object) -> str | None:
    if isinstance(expr, griffe.ExprCall):
        try:
            return expr.function.canonical_path
        except _NOT_FOUND:
            return None
    if isinstance(expr, griffe.Expr):
        try:
            return expr.canonical_path
        except _NOT_FOUND:
            return None
    return None


def _attrs_decorator(cls: griffe.Class) -> griffe.Expr | None:
    for decorator in cls.decorators:
        path = _call_path(decorator.value)
        if path and _ATTRS_DECORATORS.match(path):
            return decorator.value if isinstance(decorator.value, griffe.Expr) else None
    return None


def _arguments(call: object) -> dict[str, Any]:
    if not isinstance(call, griffe.ExprCall):
        return {}
    out: dict[str, Any] = {}
    for argument in call.arguments:
        if isinstance(argument, griffe.ExprKeyword):
            out[argument.name] = argument.value
    return out


def _is_field(member: object) -> TypeGuard[griffe.Attribute]:
    if not isinstance(member, griffe.Attribute) or member.annotation is None:
        return False
    if "property" in member.labels:
        return False
    annotation = str(member.annotation)
    return not annotation.startswith(("ClassVar", "typing.ClassVar"))


def _fields(cls: griffe.Class) -> list[griffe.Parameter]:
    """The ``__init__`` parameters of one attrs class (its own fields, in order)."""
    kw_only = str(_arguments(_attrs_decorator(cls)).get("kw_only")) == "True"
    parameters = []
    for member in list(cls.members.values()):
        if not _is_field(member):
            continue
        value = member.value
        default: Any = None
        field_kw_only = kw_only
        init = True
        alias = member.name.lstrip("_")
        if _call_path(value) in _ATTRS_FIELD:
            args = _arguments(value)
            if "default" in args:
                default = args["default"]
            elif "factory" in args:
                default = griffe.ExprCall(function=args["factory"], arguments=[])
            init = str(args.get("init", "True")) != "False"
            field_kw_only = field_kw_only or str(args.get("kw_only")) == "True"
            if "alias" in args:
                alias = str(args["alias"]).strip("'\"")
            member.value = default
        else:
            default = value
        member.labels.discard("class-attribute")
        member.labels.add("instance-attribute")
        if not init:
            continue
        parameters.append(
            griffe.Parameter(
                alias,
                annotation=member.annotation,
                kind=_KEYWORD if field_kw_only else _POSITIONAL,
                default=default,
                docstring=member.docstring,
            )
        )
    return parameters


def _attrs_init(cls: griffe.Class) -> None:
    if _attrs_decorator(cls) is None:
        return
    if "__init__" in cls.members:
        _fields(cls)  # still show the defaults of the fields
        return
    own = _fields(cls)
    inherited: list[griffe.Parameter] = []
    try:
        mro = cls.mro()
    except ValueError:
        mro = []
    for parent in reversed(mro):
        if _attrs_decorator(parent) is not None:
            inherited.extend(_fields(parent))
    by_name = {p.name: p for p in [*inherited, *own]}
    positional = [p for p in by_name.values() if p.kind is not griffe.ParameterKind.keyword_only]
    keyword = [p for p in by_name.values() if p.kind is griffe.ParameterKind.keyword_only]
    init = griffe.Function(
        "__init__",
        lineno=0,
        endlineno=0,
        parent=cls,
        parameters=griffe.Parameters(
            griffe.Parameter("self", kind=_POSITIONAL),
            *positional,
            *keyword,
        ),
        returns="None",
    )
    cls.set_member("__init__", init)


def _config_defaults(function: griffe.Function, collection: Any) -> None:
    """``= DEFAULTS.threads`` -> the default written on ``EmitterConfig.threads``."""
    for parameter in function.parameters:
        default = parameter.default
        if not isinstance(default, griffe.ExprAttribute):
            continue
        try:
            path = default.canonical_path
        except _NOT_FOUND:
            continue
        if not path.startswith(_CONFIG_DEFAULTS + "."):
            continue
        name = path.rsplit(".", 1)[1]
        try:
            field = collection[_CONFIG_CLASS].members[name]
        except KeyError:
            continue
        if isinstance(field.value, griffe.ExprCall) and _call_path(field.value) in _ATTRS_FIELD:
            args = _arguments(field.value)
            parameter.default = args.get("default", "None")  # a factory's default is None
        elif field.value is not None:
            parameter.default = field.value


_SIMPLE_NODES = (
    ast.Expression,
    ast.Constant,
    ast.BinOp,
    ast.UnaryOp,
    ast.operator,
    ast.unaryop,
    ast.Tuple,
    ast.Load,
)


def _plain(value: object) -> bool:
    """True when ``value`` reads as well as the name standing for it."""
    if isinstance(value, griffe.ExprCall):
        return not value.arguments
    try:
        tree = ast.parse(str(value), mode="eval")
    except SyntaxError:
        return False
    return all(isinstance(node, _SIMPLE_NODES) for node in ast.walk(tree))


def _constant(expr: Any, collection: Any, depth: int = 0) -> Any:
    """The value a module-level constant of the package stands for, else ``expr``."""
    if depth > 4 or not isinstance(expr, (griffe.ExprName, griffe.ExprAttribute)):
        return expr
    try:
        path = expr.canonical_path
        target = collection[path]
        if target.is_alias:
            target = target.final_target
    except _NOT_FOUND:
        return expr
    if not isinstance(target, griffe.Attribute) or not isinstance(target.parent, griffe.Module):
        return expr
    if not path.startswith("selligent_segment.") or target.value is None:
        return expr
    value = _constant(target.value, collection, depth + 1)
    return value if _plain(value) else expr


def _constants(obj: griffe.Object, collection: Any) -> None:
    if isinstance(obj, griffe.Function):
        for parameter in obj.parameters:
            if parameter.default is not None:
                parameter.default = _constant(parameter.default, collection)
    elif isinstance(obj, griffe.Attribute) and obj.value is not None:
        parent = obj.parent
        in_method = obj.labels == {"instance-attribute"}
        if isinstance(parent, griffe.Class) and in_method and _attrs_decorator(parent) is None:
            obj.value = None  # set in a method: the expression there means nothing here
        else:
            obj.value = _constant(obj.value, collection)


def _target(obj: griffe.Object, name: str) -> str | None:
    """The path of ``name`` as seen from ``obj``'s docstring, or None."""
    collection = obj.modules_collection
    scope: griffe.Object | None = obj
    head, _, rest = name.partition(".")
    while scope is not None:
        try:
            path = scope.resolve(head)
        except _NOT_FOUND:
            path = None
        if path is None and head in getattr(scope, "members", {}):
            path = scope.members[head].path
        if path is not None:
            full = f"{path}.{rest}" if rest else path
            try:
                return str(collection[full].path)
            except _NOT_FOUND:
                return full
        scope = scope.parent
    try:
        return str(collection[name].path)
    except _NOT_FOUND:
        return None


def _roles(obj: griffe.Object) -> None:
    docstring = obj.docstring
    if docstring is None or ":" not in docstring.value:
        return

    def replace(match: re.Match[str]) -> str:
        role, tilde, name = match.groups()
        shown = name.rsplit(".", 1)[-1] if tilde else name
        if role in ("meth", "func"):
            shown += "()"
        target = _target(obj, name)
        if target is None:
            return f"`{shown}`"
        return f'<autoref identifier="{target}" optional><code>{shown}</code></autoref>'

    docstring.value = _ROLE.sub(replace, docstring.value)


def _walk(obj: griffe.Object, seen: set[str]) -> None:
    if obj.path in seen:
        return
    seen.add(obj.path)
    if isinstance(obj, griffe.Class):
        _attrs_init(obj)
    _roles(obj)
    _constants(obj, obj.modules_collection)
    for member in list(obj.members.values()):
        if member.is_alias:
            continue
        _walk(member, seen)  # type: ignore[arg-type]


def _signatures(obj: griffe.Object, collection: Any, seen: set[str]) -> None:
    if obj.path in seen:
        return
    seen.add(obj.path)
    if isinstance(obj, griffe.Function):
        _config_defaults(obj, collection)
    for member in list(obj.members.values()):
        if not member.is_alias:
            _signatures(member, collection, seen)  # type: ignore[arg-type]


class ReferenceExtension(griffe.Extension):
    """See the module docstring."""

    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        # Signatures first: they read the EmitterConfig fields before they are rewritten.
        _signatures(pkg, pkg.modules_collection, set())
        _walk(pkg, set())
