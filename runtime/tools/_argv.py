"""Which arguments of an allowlisted program name files, and which options are safe.

``shell.exec`` hands argv to the program, which opens what it names itself. To confine it,
each default program has an allow-list of options parsed as its GNU ``getopt_long`` parses
them (short clusters ``-abc``, ``-kVALUE`` or ``-k VALUE``, ``--name=VALUE`` or ``--name
VALUE``, ``--`` ending options, options anywhere among operands): every option is either a
flag, a value that is not a file (a pattern, a number), or a file the program reads or
writes. An option not on the list is refused, with its reason where a known one is refused
on purpose (``--files0-from`` reads file names from a file the check cannot see into;
``--compress-program`` runs a program). Long options must be spelled in full: a prefix the
program would accept as an abbreviation might name an option this table does not know.

:func:`file_arguments` returns the files found, each with how the program uses it, for
:meth:`Workspace.check`. A program without rules here (one an operator added to the allow
list) gets a generic, lexical screening instead, and every argument that might be a path is
checked as one.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterator, Mapping
from typing import Final, NamedTuple

from ._errors import ToolPermissionDenied
from ._workspace import PathAccess

__all__ = ["FileArgument", "file_arguments", "has_rules"]


class _K(enum.Enum):
    FLAG = "flag"
    VALUE = "value"  # takes a value that is not a file
    OPTIONAL = "optional"  # long option with an optional value, given only as --name=VALUE
    READ = "read"  # takes a file it reads
    WRITE = "write"  # takes a file it writes


F, V, OPT, R, W = _K.FLAG, _K.VALUE, _K.OPTIONAL, _K.READ, _K.WRITE


class FileArgument(NamedTuple):
    """A path found in argv and how the program uses it."""

    path: str
    access: PathAccess


class _Rules(NamedTuple):
    short: Mapping[str, _K]
    long: Mapping[str, _K]
    refused: Mapping[str, str]  # option spelling -> why it is refused


def _keys(words: str, kind: _K) -> dict[str, _K]:
    return dict.fromkeys(words.split(), kind)


def _flags(letters: str) -> dict[str, _K]:
    return dict.fromkeys(letters, F)


_RUNS = "runs another program"
_FILES_FROM = "reads file names from a file, which the workspace check cannot see into"
_FOLLOWS = "follows symbolic links, which may lead outside the workspace"
_DIGITS = "0123456789"

_CAT = _Rules(
    short=_flags("AbeEnstTuv"),
    long=_keys(
        (
            "--show-all --number-nonblank --show-ends --number --squeeze-blank --show-tabs "
            "--show-nonprinting --help --version"
        ),
        F,
    ),
    refused={},
)
_HEAD = _Rules(
    short={**_flags("qvz" + _DIGITS), "c": V, "n": V},
    long={
        **_keys("--quiet --silent --verbose --zero-terminated --help --version", F),
        "--bytes": V,
        "--lines": V,
    },
    refused={},
)
_REOPENS = "reopens the file by name while it runs, after the check (use -f)"
_TAIL = _Rules(
    short={**_flags("fqvz" + _DIGITS), "c": V, "n": V, "s": V},
    long={
        **_keys("--quiet --silent --verbose --zero-terminated --help --version", F),
        "--bytes": V,
        "--lines": V,
        "--follow": OPT,
        "--sleep-interval": V,
        "--max-unchanged-stats": V,
    },
    refused={"--pid": "watches another process", "-F": _REOPENS, "--retry": _REOPENS},
)
_SORT = _Rules(
    short={**_flags("bdfgiMhnRrVcCmsuz"), "k": V, "S": V, "t": V, "o": W},
    long={
        **_keys(
            (
                "--ignore-leading-blanks --dictionary-order --ignore-case "
                "--general-numeric-sort --ignore-nonprinting --month-sort "
                "--human-numeric-sort --numeric-sort --random-sort --reverse --version-sort "
                "--debug --merge --stable --unique --zero-terminated --help --version"
            ),
            F,
        ),
        "--check": OPT,
        "--sort": V,
        "--batch-size": V,
        "--key": V,
        "--buffer-size": V,
        "--field-separator": V,
        "--parallel": V,
        "--random-source": R,
        "--output": W,
    },
    refused={
        "--files0-from": _FILES_FROM,
        "--compress-program": _RUNS,
        "-T": "writes temporary files in a directory it names (the call has its own)",
        "--temporary-directory": "writes temporary files in a directory it names (the call "
        "has its own)",
    },
)
_UNIQ = _Rules(
    short={**_flags("cdDiuz"), "f": V, "s": V, "w": V},
    long={
        **_keys(
            "--count --repeated --ignore-case --unique --zero-terminated --help --version",
            F,
        ),
        "--all-repeated": OPT,
        "--group": OPT,
        "--skip-fields": V,
        "--skip-chars": V,
        "--check-chars": V,
    },
    refused={},
)
_WC = _Rules(
    short=_flags("cmlLw"),
    long={
        **_keys("--bytes --chars --lines --max-line-length --words --help --version", F),
        "--total": V,
    },
    refused={"--files0-from": _FILES_FROM},
)
_LS = _Rules(
    short={**_flags("aAbBcCdDfFgGhHiklmnNopqQrRsStuUvxXZ1"), "I": V, "T": V, "w": V},
    long={
        **_keys(
            (
                "--all --almost-all --author --escape --ignore-backups --directory --dired "
                "--file-type --full-time --group-directories-first --no-group "
                "--human-readable --si --dereference-command-line "
                "--dereference-command-line-symlink-to-dir --inode --kibibytes "
                "--numeric-uid-gid --literal --hide-control-chars --show-control-chars "
                "--quote-name --reverse --recursive --size --context --zero --help --version"
            ),
            F,
        ),
        **_keys("--color --classify --hyperlink", OPT),
        **_keys(
            (
                "--block-size --format --hide --ignore --indicator-style --quoting-style "
                "--sort --time --time-style --tabsize --width"
            ),
            V,
        ),
    },
    refused={"-L": _FOLLOWS, "--dereference": _FOLLOWS},
)
_GREP = _Rules(
    short={
        **_flags("EFGPiywxzsvVbnHhoqaIrULlcTZ" + _DIGITS),
        **dict.fromkeys("emABCdD", V),
        "f": R,
    },
    long={
        **_keys(
            (
                "--extended-regexp --fixed-strings --basic-regexp --perl-regexp --ignore-case "
                "--no-ignore-case --word-regexp --line-regexp --null-data --no-messages "
                "--invert-match --version --help --byte-offset --line-number --line-buffered "
                "--with-filename --no-filename --only-matching --quiet --silent --text "
                "--recursive --files-without-match --files-with-matches --count --initial-tab "
                "--null --no-group-separator --binary"
            ),
            F,
        ),
        **_keys(
            (
                "--regexp --max-count --label --binary-files --directories --devices --include "
                "--exclude --exclude-dir --before-context --after-context --context "
                "--group-separator"
            ),
            V,
        ),
        "--color": OPT,
        "--colour": OPT,
        "--file": R,
        "--exclude-from": R,
    },
    refused={
        "-R": _FOLLOWS + " (use -r)",
        "--dereference-recursive": _FOLLOWS + " (use --recursive)",
    },
)
_DIFF = _Rules(
    short={
        **_flags("qscuenyptTrNiEZbwBadv"),
        **dict.fromkeys("CUWFIxSD", V),
        "X": R,
    },
    long={
        **_keys(
            (
                "--normal --brief --report-identical-files --ed --rcs --side-by-side "
                "--left-column --suppress-common-lines --show-c-function --expand-tabs "
                "--initial-tab --suppress-blank-empty --recursive --no-dereference "
                "--new-file --unidirectional-new-file --ignore-file-name-case "
                "--no-ignore-file-name-case --ignore-case --ignore-tab-expansion "
                "--ignore-trailing-space --ignore-space-change --ignore-all-space "
                "--ignore-blank-lines --text --strip-trailing-cr --minimal "
                "--speed-large-files --help --version"
            ),
            F,
        ),
        **_keys("--context --unified --color", OPT),
        **_keys(
            (
                "--width --show-function-line --label --tabsize --exclude --starting-file "
                "--ignore-matching-lines --ifdef --old-group-format --new-group-format "
                "--changed-group-format --unchanged-group-format --line-format "
                "--old-line-format --new-line-format --unchanged-line-format "
                "--horizon-lines --palette"
            ),
            V,
        ),
        "--exclude-from": R,
        "--from-file": R,
        "--to-file": R,
    },
    refused={"-l": _RUNS + " (pr)", "--paginate": _RUNS + " (pr)"},
)

_RULES: Final[Mapping[str, _Rules]] = {
    "cat": _CAT,
    "head": _HEAD,
    "tail": _TAIL,
    "sort": _SORT,
    "uniq": _UNIQ,
    "wc": _WC,
    "ls": _LS,
    "grep": _GREP,
    "diff": _DIFF,
}


def has_rules(name: str) -> bool:
    """Whether ``name`` is parsed by precise rules here (else the generic screening)."""
    return name in _RULES or name in ("echo", "find")


def file_arguments(name: str, args: list[str]) -> list[FileArgument]:
    """The files that ``name`` would open given ``args`` (argv without the program).

    Raises:
        ToolPermissionDenied: an option is not allowed, naming it and saying why.
    """
    if name == "echo":
        return []  # prints its arguments; opens nothing
    if name == "find":
        return list(_find(args))
    rules = _RULES.get(name)
    if rules is None:
        return list(_generic(name, args))
    found, operands, seen = _getopt(name, rules, args)
    match name:
        case "grep":
            recursive = bool(seen.keys() & {"-r", "--recursive"}) or any(
                value not in ("read", "skip")
                for value in seen.get("-d", []) + seen.get("--directories", [])
            )
            if not seen.keys() & {"-e", "-f", "--regexp", "--file"}:
                operands = operands[1:]  # the first operand is the pattern
            access = PathAccess.READ_TREE if recursive else PathAccess.READ
            if recursive and not operands:
                found.append(FileArgument(".", access))  # grep -r searches '.'
        case "diff":
            access = PathAccess.READ_TREE_FOLLOW  # directories are compared file by file
            found = [f._replace(access=access) if f.access is PathAccess.READ else f for f in found]
        case "uniq":
            # uniq [INPUT [OUTPUT]]: the second operand is written.
            found += [FileArgument(p, PathAccess.WRITE) for p in operands[1:2]]
            operands = operands[:1]
            access = PathAccess.READ
        case "ls":
            access = PathAccess.STAT
        case "tail" if any(v.startswith("n") for v in seen.get("--follow", [])):
            raise _refuse(name, "--follow=name", _REOPENS)
        case _:
            access = PathAccess.READ
    found += [FileArgument(p, access) for p in operands if p != "-"]
    return found


def _refuse(name: str, option: str, why: str) -> ToolPermissionDenied:
    return ToolPermissionDenied(f"{name} {option}: refused, {why}")


def _getopt(
    name: str, rules: _Rules, args: list[str]
) -> tuple[list[FileArgument], list[str], dict[str, list[str]]]:
    found: list[FileArgument] = []
    operands: list[str] = []
    seen: dict[str, list[str]] = {}

    def take(kind: _K, option: str, value: str) -> None:
        seen.setdefault(option, []).append(value)
        if kind is R:
            found.append(FileArgument(value, PathAccess.READ))
        elif kind is W:
            found.append(FileArgument(value, PathAccess.WRITE))

    index = 0
    while index < len(args):
        arg = args[index]
        index += 1
        if arg == "--":
            operands += args[index:]
            break
        if arg == "-" or not arg.startswith("-"):
            operands.append(arg)
        elif arg.startswith("--"):
            option, eq, value = arg.partition("=")
            if option in rules.refused:
                raise _refuse(name, option, rules.refused[option])
            kind = rules.long.get(option)
            if kind is None:
                raise _refuse(name, option, _unknown(rules, option))
            if kind in (V, R, W) and not eq:
                if index == len(args):
                    break  # the program reports the missing value
                value = args[index]
                index += 1
            take(kind, option, value)
        elif name in ("head", "tail") and arg[1].isdigit() and not arg[1:].isdigit():
            # head and tail read '-5c FILE' with an obsolete parser of their own, in which
            # FILE is an operand; a plain '-5' means the same under both parsers.
            raise _refuse(name, arg, "digits mixed with letters: use -n NUM or -c NUM")
        else:
            for at in range(1, len(arg)):
                option = "-" + arg[at]
                if option in rules.refused:
                    raise _refuse(name, option, rules.refused[option])
                kind = rules.short.get(arg[at])
                if kind is None:
                    raise _refuse(name, option, "not on shell.exec's list of safe options")
                if kind is F:
                    seen.setdefault(option, [])
                    continue
                value = arg[at + 1 :]
                if not value:
                    if index == len(args):
                        break
                    value = args[index]
                    index += 1
                take(kind, option, value)
                break
    return found, operands, seen


def _unknown(rules: _Rules, option: str) -> str:
    if any(known.startswith(option) for known in (*rules.long, *rules.refused)):
        return "long options must be spelled in full here"
    return "not on shell.exec's list of safe options"


def _words(text: str) -> list[str]:
    return text.split()


# find: tests and actions by how many arguments follow and what they are.
_FIND_NONE: Final = frozenset(
    _words(
        "-daystart -nowarn -warn -depth -mount -noleaf -xdev -ignore_readdir_race "
        "-noignore_readdir_race -empty -false -true -nouser -nogroup -readable -writable "
        "-executable -print -print0 -ls -prune -quit ( ) ! , -not -a -and -o -or"
    )
)
_FIND_VALUE: Final = frozenset(
    _words(
        "-regextype -maxdepth -mindepth -amin -atime -cmin -ctime -mmin -mtime -used "
        "-context -fstype -gid -uid -group -user -ilname -lname -iname -name -inum "
        "-ipath -path -iwholename -wholename -iregex -regex -links -perm -size -type -printf"
    )
)
_FIND_FILE: Final = frozenset(("-anewer", "-cnewer", "-newer", "-samefile"))
_FIND_REFUSED: Final[Mapping[str, str]] = {
    **dict.fromkeys(("-exec", "-execdir", "-ok", "-okdir"), _RUNS),
    "-delete": "deletes files",
    **dict.fromkeys(("-fprint", "-fprint0", "-fprintf", "-fls"), "writes a file it names"),
    "-files0-from": _FILES_FROM,
    "-follow": _FOLLOWS,
    "-L": _FOLLOWS,
    "-xtype": "looks through symbolic links, which may lead outside the workspace",
}
_NEWER_XY: Final = re.compile(r"-newer[aBcm][aBcmt]")


def _find(args: list[str]) -> Iterator[FileArgument]:
    index = 0
    # Global options first: -P (the default) and -H (start points only; they are checked)
    # are fine, -L follows every symlink, -D and -O tune debugging and optimisation.
    while index < len(args):
        word = args[index]
        if word in _FIND_REFUSED:
            raise _refuse("find", word, _FIND_REFUSED[word])
        if word in ("-P", "-H") or re.fullmatch(r"-O\d*", word):
            index += 1
        elif word == "-D":
            index += 2
        else:
            break
    while index < len(args) and not args[index].startswith(("-", "(", "!", ",")):
        yield FileArgument(args[index], PathAccess.STAT)
        index += 1
    while index < len(args):
        word = args[index]
        index += 1
        if word in _FIND_NONE:
            continue
        if word in _FIND_REFUSED:
            raise _refuse("find", word, _FIND_REFUSED[word])
        takes = word in _FIND_VALUE or word in _FIND_FILE or _NEWER_XY.fullmatch(word)
        if takes and index == len(args):
            break  # find reports the missing argument
        if word in _FIND_VALUE:
            index += 1
        elif word in _FIND_FILE or (_NEWER_XY.fullmatch(word) and not word.endswith("t")):
            yield FileArgument(args[index], PathAccess.STAT)
            index += 1
        elif _NEWER_XY.fullmatch(word):
            index += 1  # -newerXt takes a time, not a file
        else:
            raise _refuse("find", word, "not on shell.exec's list of safe find expressions")


# Options of programs without rules that are refused all the same (``date -s`` sets the clock).
_GENERIC_REFUSED: Final[Mapping[str, tuple[str, ...]]] = {"date": ("-s", "--set")}


def _generic(name: str, args: list[str]) -> Iterator[FileArgument]:
    # No rules for this program: every argument, option value and @response-file name that
    # could be a path is checked as a file read; none may be absolute, home or hold '..'.
    for arg in args:
        for option in _GENERIC_REFUSED.get(name, ()):
            if arg.startswith(option) if option.startswith("--") else _in_cluster(option, arg):
                raise _refuse(name, option, "changes the system")
        values = [arg]
        if arg.startswith("-"):
            values = []
            if "=" in arg:
                values.append(arg.split("=", 1)[1])
            if not arg.startswith("--") and (cluster := re.match(r"-[A-Za-z0-9]*", arg)):
                values.append(arg[cluster.end() :])  # -fVALUE, -abcVALUE
        elif arg.startswith("@"):
            values.append(arg[1:])
        for value in values:
            if value.startswith(("/", "~")) or ".." in value.split("/"):
                raise ToolPermissionDenied(
                    f"{name} argument {arg!r} points outside the workspace: use relative "
                    "paths without '..'"
                )
            if value:
                yield FileArgument(value, PathAccess.READ)


def _in_cluster(option: str, arg: str) -> bool:
    cluster = re.match(r"-[A-Za-z0-9]*", arg)
    return not arg.startswith("--") and cluster is not None and option[1] in cluster.group()
