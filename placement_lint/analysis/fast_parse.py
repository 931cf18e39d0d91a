"""The fast front end: LibCST's node classes, built from CPython's own parser.

LibCST's parser is lossless: it builds a Python object for every token's whitespace too (about a
million nodes per MB of source) and a position costs a code-generating pass over the tree; on a
file dense with DTensor code that was most of the analysis (1 MB, the positions pass: parse 2.9 s,
positions 1.7 s, the analysis itself 1.2 s). The analyzer needs neither the whitespace nor a
lossless tree. `parse` builds the same node classes, with the same structure where the analyzer
reads it, from `ast.parse` (about 0.4 s per MB, 360,000 nodes): each node is allocated without its
constructor (no validation, no default objects made: analysis/fast_nodes.py), every field set
(whitespace fields to LibCST's defaults), and the ranges of the nodes come with it, from the AST's
positions converted to LibCST's semantics (character columns, a parenthesised tuple's range inside
its parentheses, an argument's or element's range around its value's parentheses).

`parse` declines (returns None) whatever it does not reproduce exactly: a text CPython's parser
rejects (LibCST then parses it, or reports it), a `match` statement, syntax newer than the
analyzer reads (type parameters), an implicitly concatenated string it cannot split, a text that
NFKC normalisation changes (CPython normalises identifiers, LibCST keeps them as written; such a
text is mostly full-width punctuation in comments, 133 of the 2,833 corpus files). The caller
then uses LibCST (placement_lint/cst_parse.py). tests/test_fast_parse.py checks that the facts,
positions included, are those LibCST's tree gives, on every fixture and on generated programs.
"""

from __future__ import annotations

import ast
import keyword
import re
import unicodedata
import warnings
from typing import Any, Callable

import libcst as cst

from placement_lint.analysis.fast_nodes import AUGMENTED, BINARY, BOOLEAN, COMPARE, UNARY, make, operator


class Unsupported(Exception):
    """A construct this front end does not reproduce: LibCST parses the text instead."""


class FastModule(cst.Module):
    """A module this front end built: `ranges` holds every node's (start line, start column, end
    line, end column), LibCST's PositionProvider semantics; `text` is the parsed source, `starts`
    the offset of each of its lines."""

    __slots__ = ("ranges", "text", "starts")

    def code_for_node(self, node: cst.CSTNode) -> str:
        """The node's text as written (LibCST's code-generates it from its lossless tree)."""
        r, starts = self.ranges[node], self.starts
        return self.text[starts[r[0] - 1] + r[1]:starts[r[2] - 1] + r[3]]


_SMALL = (ast.Assign, ast.AugAssign, ast.AnnAssign, ast.Expr, ast.Return, ast.Raise, ast.Assert, ast.Import,
          ast.ImportFrom, ast.Pass, ast.Break, ast.Continue, ast.Delete, ast.Global, ast.Nonlocal)

# one string literal token (prefix, then a triple-quoted or a one-line body), as the tokenizer reads it
_PREFIX = r"(?:[rRbBuUfF]{0,2})"
_STRING = re.compile(
    _PREFIX + r"""(?:'''[^'\\]*(?:(?:\\.|'(?!''))[^'\\]*)*'''|\"\"\"[^"\\]*(?:(?:\\.|"(?!""))[^"\\]*)*\"\"\""""
    r"""|'[^\n'\\]*(?:\\.[^\n'\\]*)*'|"[^\n"\\]*(?:\\.[^\n"\\]*)*")""",
    re.DOTALL,
)
# what may separate the tokens of an implicitly concatenated string
_BETWEEN = re.compile(r"(?:[ \t\f\r\n]|\\\r?\n|#[^\r\n]*)*")
_NEWLINES = re.compile(r"\r\n|\r|\n")
_AS = re.compile(r"as[ \t\f\\\r\n]+")
_DEF_NAME = re.compile(r"(?:async[ \t\f]+|\\\r?\n)*(?:def|class)(?:[ \t\f]|\\\r?\n)+")


def parse(source: str) -> FastModule | None:
    """`source` as LibCST's node classes, with ranges; None where LibCST must parse it."""
    if not source.isascii() and not unicodedata.is_normalized("NFKC", source):
        return None  # CPython reads identifiers NFKC-normalised (`ª` is `a`); LibCST keeps them as written
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # invalid escapes warn (raise under -W error): LibCST is silent
            tree = ast.parse(source)
    except (SyntaxError, ValueError, MemoryError, RecursionError, OverflowError):
        return None
    try:
        return _Builder(source).module(tree)
    except (Unsupported, RecursionError):
        return None
    except Exception:  # pragma: no cover - a shape this front end gets wrong: LibCST still gives the facts
        if _STRICT:
            raise
        return None


#: tests set this so that a failure of the front end itself raises instead of falling back
_STRICT = False


class _Builder:
    def __init__(self, text: str):
        self.text = text
        self.ascii = text.isascii()
        self.starts = [0] + [m.end() for m in _NEWLINES.finditer(text)]
        self.ranges: dict[Any, tuple[int, int, int, int]] = {}
        self._bytes: dict[int, bytes] = {}

    # -- positions --------------------------------------------------------------------------------
    def column(self, line: int, col: int) -> int:
        """The AST's column (UTF-8 bytes) as LibCST's (characters)."""
        if self.ascii or col == 0:
            return col
        data = self._bytes.get(line)
        if data is None:
            end = self.starts[line] if line < len(self.starts) else len(self.text)
            data = self._bytes[line] = self.text[self.starts[line - 1]:end].encode("utf-8", "surrogatepass")
        return len(data[:col].decode("utf-8", "replace"))

    def span(self, n: ast.AST) -> tuple[int, int, int, int]:
        return (n.lineno, self.column(n.lineno, n.col_offset), n.end_lineno, self.column(n.end_lineno, n.end_col_offset))

    def offset(self, line: int, col: int) -> int:
        return self.starts[line - 1] + col

    def segment(self, r: tuple[int, int, int, int]) -> str:
        return self.text[self.offset(r[0], r[1]):self.offset(r[2], r[3])]

    def at(self, node: Any, r: tuple[int, int, int, int]) -> Any:
        self.ranges[node] = r
        return node

    def position(self, offset: int) -> tuple[int, int]:
        """(line, column) of a character offset into the text."""
        lo, hi = 0, len(self.starts) - 1
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if self.starts[mid] <= offset:
                lo = mid
            else:
                hi = mid - 1
        return lo + 1, offset - self.starts[lo]

    def word(self, name: str, offset: int) -> tuple[int, int, int, int]:
        """The range of `name` written at character `offset`."""
        line, col = self.position(offset)
        return (line, col, line, col + len(name))

    def outer(self, node: Any) -> tuple[int, int, int, int]:
        """The node's range with the parentheses around it: LibCST counts an expression's own
        parentheses into the range of the node that holds it (an argument, an element)."""
        r = self.ranges[node]
        text = self.text
        s, e = self.offset(*r[:2]), self.offset(*r[2:])
        grown = False
        while True:
            i = s - 1
            while i >= 0 and text[i] in " \t\f\r\n\\":
                i -= 1
            if i < 0 or text[i] != "(":
                break
            j = e
            while j < len(text) and text[j] in " \t\f\r\n\\":
                j += 1
            if j >= len(text) or text[j] != ")":
                break
            k = i - 1
            while k >= 0 and text[k] in " \t\f\\":
                k -= 1
            if k >= 0 and (text[k].isalnum() or text[k] in "_)]\"'"):
                w = k  # a call's parenthesis (after a name, a call, a subscript, a string), unless a keyword precedes
                while w > 0 and (text[w - 1].isalnum() or text[w - 1] == "_"):
                    w -= 1
                if not keyword.iskeyword(text[w:k + 1]):
                    break
            s, e, grown = i, j + 1, True
        return self.position(s) + self.position(e) if grown else r

    def around(self, first: Any, last: Any) -> tuple[int, int, int, int]:
        """From the start of `first` to the end of `last`, their parentheses included."""
        return self.outer(first)[:2] + self.outer(last)[2:]

    def named(self, value: str, r: tuple[int, int, int, int]) -> Any:
        return self.at(make(cst.Name, value=value), r)

    # -- module and statements ----------------------------------------------------------------------
    def module(self, tree: ast.Module) -> FastModule:
        m = make(FastModule, body=[self.statement(s) for s in tree.body])
        object.__setattr__(m, "ranges", self.ranges)
        object.__setattr__(m, "text", self.text)
        object.__setattr__(m, "starts", self.starts)
        return m

    def statement(self, s: ast.stmt) -> Any:
        if isinstance(s, _SMALL):
            small = self.small(s)
            return self.at(make(cst.SimpleStatementLine, body=[small]), self.ranges[small])
        return self.compound(s)

    def suite(self, body: list[ast.stmt]) -> Any:
        """A block: LibCST's SimpleStatementSuite when it follows its header's colon on the same
        line (`if x: y()`), else an IndentedBlock."""
        first = body[0]
        line_start = self.starts[first.lineno - 1]
        first_col = self.column(first.lineno, first.col_offset)
        if self.text[line_start:line_start + first_col].strip():
            smalls = [self.small(s) for s in body]
            r = self.ranges[smalls[0]][:2] + self.ranges[smalls[-1]][2:]
            return self.at(make(cst.SimpleStatementSuite, body=smalls), r)
        stmts = [self.statement(s) for s in body]
        return self.at(make(cst.IndentedBlock, body=stmts), self.ranges[stmts[0]][:2] + self.ranges[stmts[-1]][2:])

    def orelse(self, body: list[ast.stmt], elif_ok: bool) -> Any:
        if not body:
            return None
        if elif_ok and len(body) == 1 and isinstance(body[0], ast.If) and self.text.startswith("elif", self.offset(*self.span(body[0])[:2])):
            return self.compound(body[0])
        block = self.suite(body)
        return self.at(make(cst.Else, body=block), self.ranges[block])

    def small(self, s: ast.stmt) -> Any:
        r = self.span(s)
        e = self.expr
        if isinstance(s, ast.Assign):
            targets = [self.at(make(cst.AssignTarget, target=t), self.outer(t)) for t in map(e, s.targets)]
            n = make(cst.Assign, targets=targets, value=e(s.value))
        elif isinstance(s, ast.Expr):
            n = make(cst.Expr, value=e(s.value))
        elif isinstance(s, ast.Return):
            n = make(cst.Return, value=e(s.value) if s.value is not None else None)
        elif isinstance(s, ast.AugAssign):
            n = make(cst.AugAssign, target=e(s.target), operator=operator(AUGMENTED, s.op), value=e(s.value))
        elif isinstance(s, ast.AnnAssign):
            ann = e(s.annotation)
            n = make(cst.AnnAssign, target=e(s.target), annotation=self.at(make(cst.Annotation, annotation=ann), self.outer(ann)),
                      value=e(s.value) if s.value is not None else None)
        elif isinstance(s, (ast.Import, ast.ImportFrom)):
            n = self.import_(s)
        elif isinstance(s, ast.Raise):
            cause = None
            if s.cause is not None:
                item = e(s.cause)
                cause = self.at(make(cst.From, item=item), self.ranges[item])
            n = make(cst.Raise, exc=e(s.exc) if s.exc is not None else None, cause=cause)
        elif isinstance(s, ast.Assert):
            n = make(cst.Assert, test=e(s.test), msg=e(s.msg) if s.msg is not None else None)
        elif isinstance(s, ast.Delete):
            targets = [self.element(t) for t in s.targets]
            target = targets[0].value if len(targets) == 1 else self.at(make(cst.Tuple, elements=targets), r)
            n = make(cst.Del, target=target)
        elif isinstance(s, (ast.Global, ast.Nonlocal)):
            items = [make(cst.NameItem, name=make(cst.Name, value=name)) for name in s.names]
            n = make(cst.Global if isinstance(s, ast.Global) else cst.Nonlocal, names=items)
        elif isinstance(s, ast.Pass):
            n = make(cst.Pass)
        elif isinstance(s, ast.Break):
            n = make(cst.Break)
        else:
            n = make(cst.Continue)
        return self.at(n, r)

    def import_(self, s: ast.Import | ast.ImportFrom) -> Any:
        aliases = []
        for a in s.names:
            if a.name == "*":
                return make(cst.ImportFrom, module=self.dotted(s.module, self.span(s)), names=make(cst.ImportStar),
                             relative=[make(cst.Dot)] * s.level)
            r = self.span(a)
            asname = None
            if a.asname is not None:
                found = self.text.rfind(a.asname, self.offset(*r[:2]), self.offset(*r[2:]))
                asname = make(cst.AsName, name=self.named(a.asname, self.word(a.asname, found)))
            aliases.append(self.at(make(cst.ImportAlias, name=self.dotted(a.name, r), asname=asname), r))
        if isinstance(s, ast.Import):
            return make(cst.Import, names=aliases)
        return make(cst.ImportFrom, module=self.dotted(s.module, self.span(s)), names=aliases, relative=[make(cst.Dot)] * s.level)

    def dotted(self, name: str | None, r: tuple[int, int, int, int]) -> Any:
        """`a.b.c` as LibCST's Attribute chain (its ranges those of the statement: never asked)."""
        if name is None:
            return None
        parts = name.split(".")
        node = self.named(parts[0], r)
        for part in parts[1:]:
            node = self.at(make(cst.Attribute, value=node, attr=self.named(part, r)), r)
        return node

    def compound(self, s: ast.stmt) -> Any:
        r = self.span(s)
        e = self.expr
        if isinstance(s, (ast.FunctionDef, ast.AsyncFunctionDef)):
            if getattr(s, "type_params", None):
                raise Unsupported("type parameters")
            n = make(cst.FunctionDef, name=self.def_name(s), params=self.parameters(s.args), body=self.suite(s.body),
                      decorators=[self.decorator(d) for d in s.decorator_list],
                      returns=self.annotation(s.returns),
                      asynchronous=make(cst.Asynchronous) if isinstance(s, ast.AsyncFunctionDef) else None)
        elif isinstance(s, ast.ClassDef):
            if getattr(s, "type_params", None):
                raise Unsupported("type parameters")
            bases = [self.arg(b) for b in s.bases]
            n = make(cst.ClassDef, name=self.def_name(s), body=self.suite(s.body), bases=bases,
                      keywords=[self.keyword(k) for k in s.keywords], decorators=[self.decorator(d) for d in s.decorator_list])
        elif isinstance(s, ast.If):
            n = make(cst.If, test=e(s.test), body=self.suite(s.body), orelse=self.orelse(s.orelse, True))
        elif isinstance(s, (ast.For, ast.AsyncFor)):
            n = make(cst.For, target=e(s.target), iter=e(s.iter), body=self.suite(s.body), orelse=self.orelse(s.orelse, False),
                      asynchronous=make(cst.Asynchronous) if isinstance(s, ast.AsyncFor) else None)
        elif isinstance(s, ast.While):
            n = make(cst.While, test=e(s.test), body=self.suite(s.body), orelse=self.orelse(s.orelse, False))
        elif isinstance(s, (ast.With, ast.AsyncWith)):
            items = []
            for item in s.items:
                value = e(item.context_expr)
                asname = None
                if item.optional_vars is not None:
                    target = e(item.optional_vars)
                    asname = self.at(make(cst.AsName, name=target), self.outer(target))
                items.append(self.at(make(cst.WithItem, item=value, asname=asname), self.around(value, target if asname else value)))
            n = make(cst.With, items=items, body=self.suite(s.body),
                      asynchronous=make(cst.Asynchronous) if isinstance(s, ast.AsyncWith) else None)
        elif isinstance(s, ast.Try) or type(s).__name__ == "TryStar":
            star = not isinstance(s, ast.Try)
            handlers = [self.handler(h, star) for h in s.handlers]
            final = None
            if s.finalbody:
                block = self.suite(s.finalbody)
                final = self.at(make(cst.Finally, body=block), self.ranges[block])
            n = make(cst.TryStar if star else cst.Try, body=self.suite(s.body), handlers=handlers,
                      orelse=self.orelse(s.orelse, False), finalbody=final)
        else:
            raise Unsupported(type(s).__name__)  # match statements, and what a later Python adds
        return self.at(n, r)

    def def_name(self, s: ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) -> Any:
        start = self.offset(s.lineno, self.column(s.lineno, s.col_offset))
        found = _DEF_NAME.match(self.text, start)
        if found is None:
            raise Unsupported("a def without its keyword where the AST says")
        return self.named(s.name, self.word(s.name, found.end()))

    def decorator(self, d: ast.expr) -> Any:
        value = self.expr(d)
        r = self.outer(value)
        at = self.text.rfind("@", self.starts[r[0] - 1], self.offset(r[0], r[1]))
        start = self.position(at) if at >= 0 else r[:2]
        return self.at(make(cst.Decorator, decorator=value), start + r[2:])

    def annotation(self, a: ast.expr | None) -> Any:
        if a is None:
            return None
        value = self.expr(a)
        return self.at(make(cst.Annotation, annotation=value), self.outer(value))

    def handler(self, h: ast.ExceptHandler, star: bool) -> Any:
        name = None
        if h.name is not None:
            after = self.offset(*self.span(h.type)[2:]) if h.type is not None else self.offset(*self.span(h)[:2])
            found = _AS.search(self.text, after)
            where = self.word(h.name, found.end()) if found else self.span(h)
            name = make(cst.AsName, name=self.named(h.name, where))
        return self.at(make(cst.ExceptStarHandler if star else cst.ExceptHandler, body=self.suite(h.body),
                             type=self.expr(h.type) if h.type is not None else None, name=name), self.span(h))

    def parameters(self, a: ast.arguments) -> Any:
        plain = [*a.posonlyargs, *a.args]
        defaults = [None] * (len(plain) - len(a.defaults)) + list(a.defaults)
        params = [self.param(p, d) for p, d in zip(plain, defaults)]
        kwonly = [self.param(p, d) for p, d in zip(a.kwonlyargs, a.kw_defaults)]
        star_arg: Any = cst.MaybeSentinel.DEFAULT
        if a.vararg is not None:
            star_arg = self.param(a.vararg, None, "*")
        elif kwonly:
            star_arg = make(cst.ParamStar)
        n = len(a.posonlyargs)
        return make(cst.Parameters, posonly_params=params[:n], params=params[n:], kwonly_params=kwonly, star_arg=star_arg,
                     star_kwarg=self.param(a.kwarg, None, "**") if a.kwarg is not None else None)

    def param(self, p: ast.arg, default: ast.expr | None, star: str = "") -> Any:
        r = self.span(p)
        name = self.named(p.arg, (r[0], r[1], r[0], r[1] + len(p.arg)))
        value = self.expr(default) if default is not None else None
        end = self.outer(value)[2:] if value is not None else r[2:]
        return self.at(make(cst.Param, name=name, annotation=self.annotation(p.annotation), default=value, star=star),
                       r[:2] + end)

    # -- expressions --------------------------------------------------------------------------------
    def expr(self, n: ast.expr) -> Any:
        build = _EXPRESSIONS.get(type(n))
        if build is None:
            raise Unsupported(type(n).__name__)
        return build(self, n)

    def name(self, n: ast.Name) -> Any:
        return self.at(make(cst.Name, value=n.id), self.span(n))

    def attribute(self, n: ast.Attribute) -> Any:
        r = self.span(n)
        attr = self.named(n.attr, (r[2], r[3] - len(n.attr), r[2], r[3]))
        return self.at(make(cst.Attribute, value=self.expr(n.value), attr=attr), r)

    def call(self, n: ast.Call) -> Any:
        items: list[ast.AST] = [*n.args, *n.keywords]
        if n.args and n.keywords:
            items.sort(key=lambda a: (a.lineno, a.col_offset))  # LibCST keeps them in written order
        args = [self.keyword(a) if isinstance(a, ast.keyword) else self.arg(a) for a in items]
        return self.at(make(cst.Call, func=self.expr(n.func), args=args), self.span(n))

    def arg(self, a: ast.expr) -> Any:
        if isinstance(a, ast.Starred):
            return self.at(make(cst.Arg, value=self.expr(a.value), star="*"), self.span(a))
        value = self.expr(a)
        return self.at(make(cst.Arg, value=value), self.outer(value))

    def keyword(self, k: ast.keyword) -> Any:
        r = self.span(k)
        if k.arg is None:
            return self.at(make(cst.Arg, value=self.expr(k.value), star="**"), r)
        name = self.named(k.arg, (r[0], r[1], r[0], r[1] + len(k.arg)))
        return self.at(make(cst.Arg, value=self.expr(k.value), keyword=name), r)

    def subscript(self, n: ast.Subscript) -> Any:
        s = n.slice
        parts = s.elts if isinstance(s, ast.Tuple) and s.elts and not self.parenthesized(s, self.span(s)) else [s]
        elements = []
        for p in parts:
            if isinstance(p, ast.Slice):
                inner = self.slice(p)
            elif isinstance(p, ast.Starred):
                value = self.expr(p.value)
                inner = self.at(make(cst.Index, value=value, star="*"), self.span(p))
            else:
                value = self.expr(p)
                inner = self.at(make(cst.Index, value=value), self.outer(value))
            elements.append(self.at(make(cst.SubscriptElement, slice=inner), self.ranges[inner]))
        return self.at(make(cst.Subscript, value=self.expr(n.value), slice=elements), self.span(n))

    def slice(self, p: ast.Slice) -> Any:
        opt = self.optional
        return self.at(make(cst.Slice, lower=opt(p.lower), upper=opt(p.upper), step=opt(p.step)), self.span(p))

    def optional(self, n: ast.expr | None) -> Any:
        return self.expr(n) if n is not None else None

    def inside(self, n: ast.Tuple | ast.GeneratorExp, r: tuple[int, int, int, int]) -> tuple[int, int, int, int]:
        """LibCST's range of a tuple or generator whose AST range is `r`: inside its parentheses."""
        return (r[0], r[1] + 1, r[2], r[3] - 1) if self.parenthesized(n, r) else r

    def parenthesized(self, n: ast.Tuple | ast.GeneratorExp, r: tuple[int, int, int, int]) -> bool:
        """Whether the node's range `r` starts and ends with a pair of parentheses (the AST's
        range includes them for a tuple and a generator; LibCST's does not)."""
        start, end = self.offset(*r[:2]), self.offset(*r[2:])
        text = self.text
        if text[start:start + 1] != "(" or text[end - 1:end] != ")":
            return False
        # the parentheses between the elements only (the elements may hold strings with any text)
        inner = [self.span(e) for e in (n.elts if isinstance(n, ast.Tuple) else [])]
        depth, i, k = 0, start, 0
        while i < end:
            if k < len(inner) and i == self.offset(*inner[k][:2]):
                i = self.offset(*inner[k][2:])
                k += 1
                continue
            c = text[i]
            if c == "#":
                i = text.find("\n", i)
                i = end if i < 0 else i
                continue
            if c == "(":
                depth += 1
            elif c == ")":
                depth -= 1
                if depth == 0:
                    return i == end - 1
            i += 1
        return False

    def constant(self, n: ast.Constant) -> Any:
        r = self.span(n)
        v = n.value
        if v is None or v is True or v is False:
            return self.at(make(cst.Name, value=str(v)), r)
        if v is Ellipsis:
            return self.at(make(cst.Ellipsis), r)
        if isinstance(v, (str, bytes)):
            return self.string(r)
        cls = cst.Integer if isinstance(v, int) else cst.Float if isinstance(v, float) else cst.Imaginary
        return self.at(make(cls, value=self.segment(r)), r)

    def string(self, r: tuple[int, int, int, int], expressions: list[Any] | None = None) -> Any:
        """A string literal as LibCST has it: SimpleString (or FormattedString) when it is one
        token, ConcatenatedString of its tokens when several are written in a row."""
        text = self.text
        start, end = self.offset(*r[:2]), self.offset(*r[2:])
        tokens = []
        i = start
        while i < end:
            found = _STRING.match(text, i, end)
            if found is None:
                raise Unsupported("a string literal not split into tokens")
            tokens.append((found.start(), found.end()))
            i = _BETWEEN.match(text, found.end(), end).end()
        if len(tokens) == 1:
            if expressions is not None:
                parts = [make(cst.FormattedStringExpression, expression=x) for x in expressions]
                return self.at(make(cst.FormattedString, parts=parts), r)
            return self.at(make(cst.SimpleString, value=text[start:end]), r)
        # (the analyzer never looks inside a concatenation; each token is kept as text)
        node = None
        for a, b in reversed(tokens):
            piece = self.at(make(cst.SimpleString, value=text[a:b]), self.position(a) + self.position(b))
            node = piece if node is None else self.at(make(cst.ConcatenatedString, left=piece, right=node),
                                                      self.position(a) + r[2:])
        return node

    def joinedstr(self, n: ast.JoinedStr) -> Any:
        expressions = [self.expr(v.value) for v in n.values if isinstance(v, ast.FormattedValue)]
        return self.string(self.span(n), expressions)

    def binop(self, n: ast.BinOp) -> Any:
        return self.at(make(cst.BinaryOperation, left=self.expr(n.left), operator=operator(BINARY, n.op),
                             right=self.expr(n.right)), self.span(n))

    def unaryop(self, n: ast.UnaryOp) -> Any:
        return self.at(make(cst.UnaryOperation, operator=operator(UNARY, n.op), expression=self.expr(n.operand)), self.span(n))

    def boolop(self, n: ast.BoolOp) -> Any:
        # `a or b or c` is LibCST's ((a or b) or c)
        op = operator(BOOLEAN, n.op)
        values = [self.expr(v) for v in n.values]
        node = values[0]
        for v in values[1:]:
            node = self.at(make(cst.BooleanOperation, left=node, operator=op, right=v), self.around(node, v))
        self.ranges[node] = self.span(n)
        return node

    def compare(self, n: ast.Compare) -> Any:
        left = self.expr(n.left)
        targets = []
        prev = self.outer(left)
        for op, c in zip(n.ops, n.comparators):
            comparator = self.expr(c)
            start = self.position(_BETWEEN.match(self.text, self.offset(*prev[2:])).end())
            prev = self.outer(comparator)
            targets.append(self.at(make(cst.ComparisonTarget, operator=operator(COMPARE, op), comparator=comparator),
                                   start + prev[2:]))
        return self.at(make(cst.Comparison, left=left, comparisons=targets), self.span(n))

    def ifexp(self, n: ast.IfExp) -> Any:
        return self.at(make(cst.IfExp, test=self.expr(n.test), body=self.expr(n.body), orelse=self.expr(n.orelse)), self.span(n))

    def element(self, e: ast.expr) -> Any:
        if isinstance(e, ast.Starred):
            return self.starred(e)
        value = self.expr(e)
        return self.at(make(cst.Element, value=value), self.outer(value))

    def starred(self, e: ast.Starred) -> Any:
        return self.at(make(cst.StarredElement, value=self.expr(e.value)), self.span(e))

    def sequence(self, n: ast.Tuple | ast.List | ast.Set) -> Any:
        cls = cst.Tuple if isinstance(n, ast.Tuple) else cst.List if isinstance(n, ast.List) else cst.Set
        r = self.inside(n, self.span(n)) if cls is cst.Tuple else self.span(n)
        return self.at(make(cls, elements=[self.element(e) for e in n.elts]), r)

    def dict(self, n: ast.Dict) -> Any:
        elements = []
        for k, v in zip(n.keys, n.values):
            value = self.expr(v)
            if k is None:
                elements.append(make(cst.StarredDictElement, value=value))
            else:
                key = self.expr(k)
                elements.append(self.at(make(cst.DictElement, key=key, value=value), self.around(key, value)))
        return self.at(make(cst.Dict, elements=elements), self.span(n))

    def comprehension(self, n: ast.ListComp | ast.SetComp | ast.GeneratorExp | ast.DictComp) -> Any:
        for_in = None
        for g in reversed(n.generators):
            ifs = [make(cst.CompIf, test=self.expr(t)) for t in g.ifs]
            for_in = make(cst.CompFor, target=self.expr(g.target), iter=self.expr(g.iter), ifs=ifs, inner_for_in=for_in,
                           asynchronous=make(cst.Asynchronous) if g.is_async else None)
        r = self.span(n)
        if isinstance(n, ast.DictComp):
            return self.at(make(cst.DictComp, key=self.expr(n.key), value=self.expr(n.value), for_in=for_in), r)
        cls = cst.ListComp if isinstance(n, ast.ListComp) else cst.SetComp if isinstance(n, ast.SetComp) else cst.GeneratorExp
        if cls is cst.GeneratorExp:
            r = self.inside(n, r)
        return self.at(make(cls, elt=self.expr(n.elt), for_in=for_in), r)

    def lambda_(self, n: ast.Lambda) -> Any:
        return self.at(make(cst.Lambda, params=self.parameters(n.args), body=self.expr(n.body)), self.span(n))

    def namedexpr(self, n: ast.NamedExpr) -> Any:
        return self.at(make(cst.NamedExpr, target=self.expr(n.target), value=self.expr(n.value)), self.span(n))

    def await_(self, n: ast.Await) -> Any:
        return self.at(make(cst.Await, expression=self.expr(n.value)), self.span(n))

    def yield_(self, n: ast.Yield | ast.YieldFrom) -> Any:
        value = self.optional(n.value)
        if isinstance(n, ast.YieldFrom):
            value = self.at(make(cst.From, item=value), self.ranges[value])
        return self.at(make(cst.Yield, value=value), self.span(n))


#: the builder of each expression node (a class-level table: bound methods kept on the builder would
#: make a cycle, and a worker's paused collector would keep every block's tree until its batch ends)
_EXPRESSIONS: dict[type, Callable[[_Builder, Any], Any]] = {
    ast.Name: _Builder.name, ast.Attribute: _Builder.attribute, ast.Call: _Builder.call, ast.Subscript: _Builder.subscript,
    ast.Constant: _Builder.constant, ast.BinOp: _Builder.binop, ast.UnaryOp: _Builder.unaryop, ast.BoolOp: _Builder.boolop,
    ast.Compare: _Builder.compare, ast.IfExp: _Builder.ifexp, ast.Tuple: _Builder.sequence, ast.List: _Builder.sequence,
    ast.Set: _Builder.sequence, ast.Dict: _Builder.dict, ast.ListComp: _Builder.comprehension,
    ast.SetComp: _Builder.comprehension, ast.GeneratorExp: _Builder.comprehension, ast.DictComp: _Builder.comprehension,
    ast.Lambda: _Builder.lambda_, ast.NamedExpr: _Builder.namedexpr, ast.Await: _Builder.await_, ast.Yield: _Builder.yield_,
    ast.YieldFrom: _Builder.yield_, ast.Starred: _Builder.starred, ast.JoinedStr: _Builder.joinedstr,
    ast.Slice: _Builder.slice,
}
