"""Which gin bindings a job reaches. Gin refuses a misspelled name, but not a binding of a real
configurable that the job never calls: `optimizer.epsilon = 1e-3` in a job that builds no
optimizer from `@optimizer` would be accepted and do nothing. Here such a binding is a mistake
like a typo, found before the job starts.

A job reaches its entry configurable (trainer.main's `job`), the configurables its Python
defaults name, and every configurable a reached binding refers to (`@name`, `@name()`, also
through `%MACRO`s). One exception: a configurable that a file wired in and a later binding
swapped out (fine_tuning_course.gin replaces fine_tuning.gin's `@stlr` by `@one_cycle`) may keep
the bindings its file gave it; a --gin_param for it is still an error, since that is a setting
the user just asked for.
"""
import collections
import os

from gin import config_parser
import tensorflow as tf

FLAG = "--gin_param"
Binding = collections.namedtuple("Binding", "scope selector param value origin")
_Reference = collections.namedtuple("_Reference", "name")
_Macro = collections.namedtuple("_Macro", "name")


class _Delegate(config_parser.ParserDelegate):
    def configurable_reference(self, scoped_configurable_name, evaluate):
        return _Reference(_short(scoped_configurable_name.rsplit("/", 1)[-1]))

    def macro(self, macro_name):
        return _Macro(macro_name)


def _short(selector):
    """`name` of `module.name`: this project registers every configurable under a plain name."""
    return selector.rsplit(".", 1)[-1]


def _statements(text, origin, search_path):
    for statement in config_parser.ConfigParser(text, _Delegate()):
        if isinstance(statement, config_parser.IncludeStatement):
            yield from _file_statements(statement.filename, search_path)
        elif isinstance(statement, config_parser.BindingStatement):
            selector = statement.selector if not statement.arg_name else _short(statement.selector)
            yield Binding(statement.scope, selector, statement.arg_name, statement.value, origin)


def _file_statements(path, search_path):
    for root in ("", *search_path):
        if tf.io.gfile.exists(os.path.join(root, path)):
            with tf.io.gfile.GFile(os.path.join(root, path)) as f:
                return list(_statements(f.read(), path, search_path))
    return []  # gin's own parse has reported it


def read_bindings(files, bindings, search_path=()):
    """Every binding statement of `files` (includes followed) and then `bindings`, in order."""
    statements = [s for path in files for s in _file_statements(path, search_path)]
    return statements + [s for text in bindings for s in _statements(text, FLAG, search_path)]


def _references(value, macros, seen=()):
    """Names of the configurables `value` refers to, through macros too."""
    if isinstance(value, _Reference):
        yield value.name
    elif isinstance(value, _Macro):
        if value.name in macros and value.name not in seen:
            yield from _references(macros[value.name], macros, (*seen, value.name))
    elif isinstance(value, dict):
        for item in value.values():
            yield from _references(item, macros, seen)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _references(item, macros, seen)


def _macros(final):
    """{name: value} of the `NAME = value` statements."""
    return {s.selector: s.value for s in final.values() if not s.param}


def reached(statements, entry, defaults):
    """(the configurables `entry` reaches, the final bindings); `defaults`: {param: name} of the
    entry's Python defaults that are configurables, used where the param is not bound."""
    final = {(s.scope, s.selector, s.param): s for s in statements}
    macros = _macros(final)
    names, todo = {entry}, [entry]
    while todo:
        name = todo.pop()
        values = [s.value for s in final.values() if s.selector == name and s.param]
        if name == entry:
            bound = {s.param for s in final.values() if s.selector == entry}
            values += [_Reference(n) for param, n in defaults.items() if param not in bound]
        for other in _references(values, macros):
            if other not in names:
                names.add(other)
                todo.append(other)
    return names, final


def referred(final, selector, param):
    """The configurable that the final (unscoped) binding `selector.param` refers to, or None."""
    binding = final.get(("", selector, param))
    macros = _macros(final)
    return next(_references(binding.value, macros), None) if binding else None


def unreached(statements, names, final):
    """One message per binding the job never uses (see the module docstring); `names`, `final`:
    what `reached` returned for these statements."""
    macros = _macros(final)
    swapped = {}  # name -> the binding that replaced the reference to it
    for statement in statements:
        key = (statement.scope, statement.selector, statement.param)
        now = set(_references(final[key].value, macros))
        for name in set(_references(statement.value, macros)) - now:
            swapped[name] = final[key]
    problems = []
    for s in final.values():
        if not s.param or s.selector in names:
            continue
        binding = f"{s.scope + '/' if s.scope else ''}{s.selector}.{s.param}"
        replaced = swapped.get(s.selector)
        if replaced and s.origin != FLAG:
            continue
        where = "--gin_param" if s.origin == FLAG else s.origin
        if replaced:
            now = ", ".join(f"@{n}" for n in _references(replaced.value, macros)) or "no part"
            why = (f"this job does not use {s.selector}: {replaced.selector}.{replaced.param} "
                   f"is {now} ({replaced.origin})")
        else:
            why = f"nothing this job runs refers to @{s.selector}"
        problems.append(f"{binding} ({where}) reaches nothing: {why}")
    return problems
