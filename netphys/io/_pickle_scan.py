"""Prescan of a pickle stream: refuse work bombs before the C unpickler runs a single opcode.

The unpickler does real work while it builds objects: every dict key and set member is hashed,
and hashing a tuple visits all of it again, with shared parts counted each time. A few hundred
bytes of nested shared tuples (``t = (t, t)`` forty times) used as a dict key hash for hours; a
tuple nested a million levels deep crashes the interpreter when hashed (C recursion); a dict
of integer keys chosen to collide (``k * (2**61 - 1)``) takes quadratic time to fill. None of
this can be stopped once ``pickle.Unpickler.load`` is running, so :func:`scan_pickle` walks the
opcodes first (:func:`pickletools.genops`, linear time, nothing built), simulating the stack
and the memo with one small record per object: its *expanded size* (bytes, with shared
objects counted each time they are referenced: what hashing, comparison or conversion to
arrays traverses) and its depth. It refuses a pickle whose largest object or total hashing
work passes the limit, that nests deeper than the limit, or whose dicts or sets hold many
non-string keys (collision floods; suite2p's keys are strings).

Examples
--------
>>> import pickle
>>> scan_pickle(pickle.dumps({"fs": 30.0, "xpix": [1, 2, 3]}), limit=10**6, source="ops.npy")
70
>>> t = ()
>>> for _ in range(40):
...     t = (t, t)  # 2**40 tuples once expanded: hashing it would never end
>>> scan_pickle(pickle.dumps([t]), limit=10**6, source="stat.npy")
Traceback (most recent call last):
...
netphys.errors.ResourceLimitError: stat.npy: the pickle's objects reference each other so ...
"""

from __future__ import annotations

import pickletools
from typing import Any

from netphys.errors import RecordingFormatError, ResourceLimitError

__all__ = ["MAX_DEPTH", "MAX_NONSTRING_KEYS", "scan_pickle"]

#: Deepest nesting the prescan accepts (it counts calls and their arguments as levels too).
MAX_DEPTH = 128
#: Most dict keys / set members that are not strings in one dict or set.
MAX_NONSTRING_KEYS = 1024

_STRINGS = frozenset(
    [
        "STRING",
        "BINSTRING",
        "SHORT_BINSTRING",
        "BINBYTES",
        "SHORT_BINBYTES",
        "BINBYTES8",
        "BYTEARRAY8",
        "UNICODE",
        "SHORT_BINUNICODE",
        "BINUNICODE",
        "BINUNICODE8",
    ]
)
_LEAVES = frozenset(
    [
        "INT",
        "BININT",
        "BININT1",
        "BININT2",
        "LONG",
        "LONG1",
        "LONG4",
        "NONE",
        "NEWTRUE",
        "NEWFALSE",
        "FLOAT",
        "BINFLOAT",
        "NEXT_BUFFER",
        "GLOBAL",
        "EXT1",
        "EXT2",
        "EXT4",
        "PERSID",
    ]
)
_EMPTIES = frozenset({"EMPTY_LIST", "EMPTY_TUPLE", "EMPTY_DICT", "EMPTY_SET"})
_FIXED_ARITY = {"TUPLE1": 1, "TUPLE2": 2, "TUPLE3": 3, "REDUCE": 2, "NEWOBJ": 2, "NEWOBJ_EX": 3}
_FROM_MARK = frozenset({"LIST", "TUPLE", "FROZENSET", "DICT", "INST", "OBJ"})
_NOTHING = frozenset({"PROTO", "FRAME", "STOP", "READONLY_BUFFER"})
_MARK = object()
_SMALL_LEAVES = frozenset(
    {"BININT", "BININT1", "BININT2", "BINFLOAT", "NEWFALSE", "NEWTRUE", "NONE"}
)
_TUPLES = {"TUPLE1": 1, "TUPLE2": 2, "TUPLE3": 3}


class _Node:
    """One object of the simulated stack: expanded size, depth, string-ness, key count."""

    __slots__ = ("depth", "keys", "size", "stringy")

    def __init__(self, size: int, depth: int = 0, stringy: bool = False) -> None:
        self.size = size
        self.depth = depth
        self.stringy = stringy
        self.keys = 0


class _Scan:
    def __init__(self, limit: int, source: str) -> None:
        self.limit = limit
        self.cap = limit + 1  # sizes saturate here, so numbers stay small
        self.source = source
        self.stack: list[Any] = []
        self.memo: dict[Any, _Node] = {}
        self.peak = 0
        self.work = 0

    def pop(self) -> _Node:
        if not self.stack or self.stack[-1] is _MARK:
            raise ValueError("stack underflow")
        node: _Node = self.stack.pop()
        return node

    def pop_mark(self) -> list[_Node]:
        stack = self.stack
        for i in range(len(stack) - 1, -1, -1):
            if stack[i] is _MARK:
                items = stack[i + 1 :]
                del stack[i:]
                return items
        raise ValueError("no MARK on the stack")

    def new(self, children: list[_Node], own: int = 8) -> _Node:
        size, depth = own, 0
        for c in children:
            size += c.size
            if c.depth > depth:
                depth = c.depth
        node = _Node(size if size < self.cap else self.cap, depth + 1)
        self.stack.append(node)
        if size > self.peak or depth >= MAX_DEPTH:
            self.check(node)
        return node

    def grow(self, target: _Node, children: list[_Node]) -> None:
        if target.depth == 0:  # ints, strings, globals: nothing the unpickler can fill
            raise ValueError("an opcode fills an object that is not a container")
        target.size = min(self.cap, target.size + sum(c.size for c in children))
        target.depth = max(target.depth, 1 + max((c.depth for c in children), default=0))
        self.check(target)

    def hashed(self, target: _Node | None, keys: list[_Node]) -> None:
        for k in keys:
            self.work = min(self.cap, self.work + k.size)
            if target is not None and not k.stringy:
                target.keys += 1
        if target is not None and target.keys > MAX_NONSTRING_KEYS:
            raise ResourceLimitError(
                f"{self.source}: a dict or set in the pickle has more than "
                f"{MAX_NONSTRING_KEYS} keys that are not strings (keys chosen to collide make "
                "filling it take quadratic time); suite2p's dicts use string keys"
            )
        self.check(target)

    def check(self, node: _Node | None) -> None:
        if node is not None:
            self.peak = max(self.peak, node.size)
            if node.depth > MAX_DEPTH:
                raise RecordingFormatError(
                    f"{self.source}: the pickle nests objects more than {MAX_DEPTH} levels deep "
                    "(hashing or walking it would overflow the interpreter's stack); "
                    "np.save of suite2p data never writes such nesting"
                )
        if max(self.peak, self.work) > self.limit:
            raise _TooBig


class _TooBig(Exception):
    pass


_LEAF = _Node(8)  # shared by every small leaf; grow() refuses to change a leaf


def _step(s: _Scan, name: str, arg: Any) -> None:
    if name in _STRINGS:
        s.stack.append(_Node(len(arg) + 8, 0, True))
    elif name in _LEAVES:
        extra = (arg.bit_length() // 8) if isinstance(arg, int) else 0
        s.stack.append(_Node(8 + extra) if extra else _LEAF)
    elif name in _EMPTIES:
        s.stack.append(_Node(8, 1))
    elif name in _FIXED_ARITY:
        items = [s.pop() for _ in range(_FIXED_ARITY[name])][::-1]
        if name in ("REDUCE", "NEWOBJ", "NEWOBJ_EX"):  # dict(pairs), set(items) hash them
            s.hashed(None, items[1:])
        s.new(items)
    elif name in _FROM_MARK:
        items = s.pop_mark()
        node = s.new(items)
        if name == "DICT":
            s.hashed(node, items[0::2])
        elif name in ("FROZENSET", "INST", "OBJ"):
            s.hashed(node if name == "FROZENSET" else None, items)
    elif name in ("APPEND", "SETITEM", "BUILD"):
        items = [s.pop() for _ in range({"SETITEM": 2}.get(name, 1))][::-1]
        target = s.pop()
        s.stack.append(target)
        s.grow(target, items)
        if name != "APPEND":  # SETITEM hashes its key; BUILD may fill a __dict__ or a set
            s.hashed(target if name == "SETITEM" else None, items[:1])
    elif name in ("APPENDS", "SETITEMS", "ADDITEMS"):
        items = s.pop_mark()
        target = s.pop()
        s.stack.append(target)
        s.grow(target, items)
        if name != "APPENDS":
            s.hashed(target, items[0::2] if name == "SETITEMS" else items)
    else:
        _step_stack(s, name, arg)


def _step_stack(s: _Scan, name: str, arg: Any) -> None:
    if name == "MARK":
        s.stack.append(_MARK)
    elif name == "POP":
        if s.stack and s.stack[-1] is _MARK:
            s.stack.pop()
        else:
            s.pop()
    elif name == "POP_MARK":
        s.pop_mark()
    elif name == "DUP":
        node = s.pop()
        s.stack += [node, node]
    elif name in ("GET", "BINGET", "LONG_BINGET"):
        s.stack.append(s.memo[int(arg)])
    elif name in ("PUT", "BINPUT", "LONG_BINPUT", "MEMOIZE"):
        node = s.pop()
        s.stack.append(node)
        s.memo[len(s.memo) if name == "MEMOIZE" else int(arg)] = node
    elif name in ("STACK_GLOBAL", "BINPERSID"):
        for _ in range(2 if name == "STACK_GLOBAL" else 1):
            s.pop()
        s.stack.append(_Node(8))
    elif name not in _NOTHING:
        raise ValueError(f"unknown opcode {name}")


def scan_pickle(data: Any, *, limit: int, source: str, hint: str = "") -> int:
    """Simulate the pickle ``data`` and refuse it if unpickling would be a work bomb.

    Parameters
    ----------
    data : bytes-like or binary file object
        The pickle stream (read up to its STOP opcode).
    limit : int
        Largest expanded size (bytes) of any object, and largest total hashing work, allowed.
    source : str
        File name, for the error messages.
    hint : str, optional
        Appended to the error message of a refused size (what limit applied, how to change it).

    Returns
    -------
    int
        The larger of the biggest object's expanded size and the hashing work.

    Raises
    ------
    ResourceLimitError
        If an object expands past ``limit``, hashing would take more work than ``limit``, or
        a dict or set holds more than :data:`MAX_NONSTRING_KEYS` non-string keys.
    RecordingFormatError
        If objects nest more than :data:`MAX_DEPTH` deep, or the stream is not a well-formed
        pickle (unknown opcode, stack underflow, undefined memo entry, truncation).
    """
    s = _Scan(int(limit), source)
    stack, memo = s.stack, s.memo
    try:
        for op, arg, _pos in pickletools.genops(data):
            name = op.name
            # the opcodes of most of a numpy pickle, inline (the others: _step)
            if name == "BINGET" or name == "LONG_BINGET":
                stack.append(memo[arg])
            elif (name == "BINPUT" or name == "LONG_BINPUT") and stack and stack[-1] is not _MARK:
                memo[arg] = stack[-1]
            elif name == "MEMOIZE" and stack and stack[-1] is not _MARK:
                memo[len(memo)] = stack[-1]
            elif name == "MARK":
                stack.append(_MARK)
            elif name in _SMALL_LEAVES:
                stack.append(_LEAF)
            elif name in _TUPLES and len(stack) >= _TUPLES[name]:
                n = _TUPLES[name]
                items = stack[-n:]
                if _MARK in items:
                    raise ValueError("stack underflow")
                del stack[-n:]
                s.new(items)
            else:
                _step(s, name, arg)
    except _TooBig:
        raise ResourceLimitError(
            f"{source}: the pickle's objects reference each other so that unpickling it would "
            f"expand or hash more than {limit} bytes (a memo tree or hash bomb: shared objects "
            f"nested in one another). suite2p never writes such files. {hint}".rstrip()
        ) from None
    except (RecordingFormatError, ResourceLimitError):
        raise
    except (ValueError, KeyError, IndexError, EOFError) as exc:
        raise RecordingFormatError(
            f"{source}: the pickle is malformed ({type(exc).__name__}: {exc}); the file is "
            "truncated, corrupted or forged"
        ) from None
    return max(s.peak, s.work)
