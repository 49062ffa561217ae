"""User mistakes, and how every command-line tool reports them.

A `UserError` says which file or setting is at fault and a fix that works. `run_tool` is the
one place where tools turn it into a single `error: ...` line on stderr and exit status 1 (2 for
a wrong command line); anything else is a bug and keeps its traceback.
"""
import string
import sys

from absl import app, flags
import tensorflow as tf


class UserError(ValueError):
    """Bad input: the message names the file or setting, what is wrong with it and the fix."""


class CorpusError(UserError):
    """Bad input data: a source, a data directory or a labelled-examples file."""


class SettingError(CorpusError):
    """A UserError whose message names build settings, spelled the way the user sets them.

    `template` holds `{field}` placeholders for settings (e.g. `{vocab_size}`) and for the
    keyword `values` given here (e.g. a path). `spell` names a setting in the message: by
    default as a flag, `--vocab_size`; a tool that sets it otherwise (gin) re-spells the message
    with `spelled`.
    """

    def __init__(self, template, *, spell=lambda field: f"--{field}", **values):
        self.template, self.values = template, values
        super().__init__(self.spelled(spell))

    def spelled(self, name_of) -> str:
        fields = {name for _, name, _, _ in string.Formatter().parse(self.template) if name}
        return self.template.format(
            **{field: name_of(field) for field in fields - self.values.keys()}, **self.values)


def _fail(message, status):
    lines = [line.strip() for line in str(message).splitlines() if line.strip()]
    print(f"error: {'; '.join(lines)}", file=sys.stderr)  # one line, however many it had
    sys.exit(status)


def _flags_parser(known_only):
    def parse(argv):
        try:
            return flags.FLAGS(argv, known_only=known_only)
        except flags.Error as e:
            _fail(f"{e} (run with --helpshort for the flags)", 2)
    return parse


def run_tool(main, pass_unknown_flags=False):
    """`absl.app.run(main)`, with user mistakes reported as one line each. With
    `pass_unknown_flags`, flags this program does not define reach `main` in its argv (another
    library's options, e.g. Apache Beam's)."""

    def guarded(argv):
        try:
            return main(argv)
        except app.UsageError as e:
            _fail(f"{e} (run with --helpshort for the flags)", 2)
        except UserError as e:
            _fail(e, 1)
        except (tf.errors.NotFoundError, tf.errors.PermissionDeniedError) as e:
            # A path the user gave that TensorFlow's file system cannot open; its message names it.
            _fail(f"{e.message}. Check the path and its permissions.", 1)

    app.run(guarded, flags_parser=_flags_parser(pass_unknown_flags))
