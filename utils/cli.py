"""One command-line convention for every entry point.

An *expected* failure (bad input, missing file, refused checkpoint, mismatch between what a step reads and what
produced it) is raised as :class:`UserError` and ends the program with one line on stderr,
``error: <what is wrong> (<file>): <how to fix it>``, and exit code 2; the traceback is printed only with
``--debug`` or ``LANGVGGT4D_DEBUG=1``. Unexpected exceptions keep their traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import errno
import functools
import json
import logging
import os
import signal
import sys
import traceback
import types
import typing
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")
EXIT_USER_ERROR = 2
#: the open_clip model of the published work (4D LangSplat's targets and queries)
CLIP_MODEL, CLIP_PRETRAINED = "ViT-B-16", "laion2b_s34b_b88k"


class UserError(Exception):
    """An expected failure: ``str(e)`` is ``<what> (<file>): <fix>`` (file and fix optional)."""

    def __init__(self, what: str = "", file: str | os.PathLike | None = None, fix: str | None = None) -> None:
        self.what, self.file, self.fix = what, (str(file) if file is not None else None), fix
        text = what
        if self.file:
            text += f" ({self.file})"
        if fix:
            text += f": {fix}"
        super().__init__(text)


class BadFileError(UserError, ValueError):
    """A file a library could not read as what it should be (not JSON, not a .npy of plain numbers, not an image,
    a truncated video, not safetensors, a pickle): raised by :func:`reading`, which names the file."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C (SIGINT) or SIGTERM during a long command, re-raised by the command with what it kept: ``what``
    (e.g. ``kept 12 of 40 frames``), ``file`` (the output folder) and ``fix`` (how to resume). :func:`cli_main`
    prints it as the one ``error: interrupted by <signal>: ...`` line and exits with 128 + the signal number."""

    def __init__(self, what: str = "", file: str | os.PathLike | None = None, fix: str | None = None,
                 signum: int | None = None) -> None:
        super().__init__(what)
        self.what, self.file, self.fix, self.signum = what, (str(file) if file is not None else None), fix, signum


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread by the handler :func:`cli_main` installs, so that a terminated command
    unwinds like Ctrl-C (temporary files removed, locks released, one line said)."""

    signum = signal.SIGTERM


def interrupted(exc: KeyboardInterrupt, kept: str, folder: str | os.PathLike | None,
                fix: str = "re-run the same command to resume") -> Interrupted:
    """The :class:`Interrupted` a long command re-raises from a KeyboardInterrupt/SIGTERM: ``kept`` says what
    stays on disk (e.g. ``12 of 40 frames written``)."""
    return Interrupted(kept, folder, fix, signum=getattr(exc, "signum", None) or signal.SIGINT)


def debug_requested(argv: list[str] | None = None) -> bool:
    """``--debug`` on the command line or ``LANGVGGT4D_DEBUG=1`` in the environment."""
    argv = sys.argv[1:] if argv is None else argv
    return "--debug" in argv or os.environ.get("LANGVGGT4D_DEBUG", "") not in ("", "0")


def setup_logging(quiet: bool = False, verbose: bool = False, level: str | None = None) -> None:
    """The one logging set-up of every entry point: INFO (``-q`` WARNING, ``-v`` DEBUG, or ``--log-level``) to
    stderr, as ``LEVEL logger: message``."""
    if level:
        value = logging.getLevelName(level.upper())
        if not isinstance(value, int):
            raise UserError(f"unknown log level {level!r}", None, "use DEBUG, INFO, WARNING or ERROR")
    else:
        value = logging.WARNING if quiet else logging.DEBUG if verbose else logging.INFO
    root = logging.getLogger()
    if root.handlers:  # already set up (a second main in one process, or a test harness capturing logs)
        root.setLevel(value)
    else:
        logging.basicConfig(level=value, format="%(levelname)s %(name)s: %(message)s")


def add_logging_args(parser, log_level: bool = False) -> None:
    """The verbosity flags every entry point shares: ``-q/--quiet``, ``-v/--verbose``, ``--debug`` (tracebacks of
    expected errors too) and, where a command always had it, ``--log-level``."""
    g = parser.add_argument_group("messages")
    if not any("-q" in a.option_strings for a in parser._actions):
        g.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    g.add_argument("-v", "--verbose", action="store_true", help="debug messages")
    g.add_argument("--debug", action="store_true",
                   help="show the traceback of expected errors too (or set LANGVGGT4D_DEBUG=1)")
    if log_level:
        g.add_argument("--log-level", default=None, help="logging level (DEBUG, INFO, WARNING, ERROR)")


def setup_logging_from(args) -> None:
    """:func:`setup_logging` from the flags of :func:`add_logging_args`."""
    setup_logging(getattr(args, "quiet", False), getattr(args, "verbose", False), getattr(args, "log_level", None))


class UserExit(SystemExit):
    """How an expected failure leaves the program: exit code 2; ``str()`` is the message (already printed)."""

    def __init__(self, message: str) -> None:
        super().__init__(EXIT_USER_ERROR)
        self.message = message

    def __str__(self) -> str:
        return self.message


def _library_reason(exc: BaseException) -> str | None:
    """What a library exception raised while reading a file says about the file, or None when it is not one of
    the failures a bad file causes (numpy, PIL, OpenCV, safetensors, json, torch's weights-only unpickler)."""
    import pickle
    import zipfile

    name, module = type(exc).__name__, type(exc).__module__ or ""
    if isinstance(exc, json.JSONDecodeError):
        return f"not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})"
    if isinstance(exc, UnicodeDecodeError):
        return f"not a text file ({exc.reason})"
    if name == "SafetensorError":
        return f"not a readable safetensors file ({exc})"
    if name == "UnidentifiedImageError":
        return "not an image PIL can read"
    if name == "DecompressionBombError":
        return f"larger than PIL's safety limit for images ({exc})"
    if module.startswith("cv2") and name == "error":
        return f"OpenCV cannot decode it ({str(exc).strip().splitlines()[-1] if str(exc).strip() else 'cv2.error'})"
    if isinstance(exc, pickle.UnpicklingError):
        return f"refused: holds objects that only unpickling could load ({str(exc).splitlines()[0][:200]})"
    if isinstance(exc, SyntaxError) or name == "TokenError":  # numpy parses .npy headers as Python literals
        return f"unreadable header ({getattr(exc, 'msg', None) or exc})"
    if isinstance(exc, (EOFError, zipfile.BadZipFile)):
        return f"truncated or not the expected format ({exc or name})"
    if isinstance(exc, ValueError):  # numpy: bad .npy header, object arrays under allow_pickle=False, ...
        text = str(exc).splitlines()[0] if str(exc) else name
        if "allow_pickle" in text or "Python objects" in text:
            return "holds Python objects (an object array), not plain numbers; it is never unpickled"
        return f"unreadable ({text[:200]})"
    if isinstance(exc, OSError) and exc.errno is None:  # PIL: truncated image, broken data stream
        return f"truncated or corrupted ({exc})"
    return None


@contextlib.contextmanager
def reading(path: str | os.PathLike, fix: str = "replace the file or write it again") -> Iterator[None]:
    """Name ``path`` in any failure a bad file causes while the block reads it: the library errors of
    :func:`_library_reason` become one :class:`BadFileError` ``<what> (<path>): <fix>``; an ``OSError`` without
    a file name gets ``path``. Wrap only the library call (a bug in the code around it keeps its traceback)."""
    try:
        yield
    except UserError:
        raise
    except OSError as e:
        if e.errno is not None and e.filename is None:
            e.filename = str(path)
        if e.errno is not None:
            raise
        raise BadFileError(_library_reason(e) or str(e), path, fix) from e
    except Exception as e:
        reason = _library_reason(e)
        if reason is None:
            raise
        raise BadFileError(reason, path, fix) from e


def as_user_error(exc: BaseException) -> UserError | None:
    """The :class:`UserError` an exception stands for when it is an *expected* failure, else None.

    Expected: our own :class:`UserError` s (domain errors and the :class:`BadFileError` of :func:`reading`); a
    missing, unreadable or unwritable file, a full or read-only disk (an ``OSError`` with a file name, ``ENOSPC``,
    ``EROFS``); a file that is not the JSON, text, safetensors or image it should be.
    """
    if isinstance(exc, UserError):
        return exc
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        return UserError("no space left on the device", exc.filename,
                         "free some space or write to another disk; re-run the same command to resume")
    if isinstance(exc, OSError) and exc.errno == errno.EROFS:
        return UserError("read-only file system", exc.filename, "write to another folder (--out)")
    if isinstance(exc, (FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError,
                        FileExistsError)):
        fix = {FileNotFoundError: "check the path", PermissionError: "check the file's permissions",
               FileExistsError: "pass --overwrite or another output path"}.get(type(exc), "check the path")
        return UserError(exc.strerror or str(exc), exc.filename, fix) if exc.filename else UserError(str(exc))
    if isinstance(exc, OSError) and exc.errno is not None and exc.filename:  # EIO, ELOOP, ENAMETOOLONG, ...
        return UserError(exc.strerror or str(exc), exc.filename, "check the file and the disk")
    if isinstance(exc, json.JSONDecodeError):
        return UserError(f"not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})", None,
                         "fix or regenerate the JSON file")
    if isinstance(exc, UnicodeDecodeError):
        return UserError(f"not a text file ({exc.reason})", None, "pass the right file")
    if type(exc).__name__ == "SafetensorError":
        return UserError(f"not a readable safetensors file ({exc})", None, "write or copy the file again")
    if type(exc).__name__ == "UnidentifiedImageError":  # PIL's message names the file
        return UserError(str(exc), None, "replace the file or convert it to PNG/JPEG")
    return None


def report(exc: UserError, argv: list[str] | None = None) -> UserExit:
    """Print the one ``error:`` line (and the traceback with ``--debug``); return the exit to raise."""
    if debug_requested(argv):
        traceback.print_exc()
    print(f"error: {exc}", file=sys.stderr)
    return UserExit(f"error: {exc}")


def report_interrupt(exc: KeyboardInterrupt, argv: list[str] | None = None) -> SystemExit:
    """Print the one line of an interrupted command (what it kept and how to resume, when it said) and return the
    exit to raise: 130 after Ctrl-C (SIGINT), 143 after SIGTERM (128 + the signal number, as shells report)."""
    if debug_requested(argv):
        traceback.print_exc()
    signum = int(getattr(exc, "signum", None) or signal.SIGINT)
    text = f"interrupted by {signal.Signals(signum).name}"
    if isinstance(exc, Interrupted) and exc.what:
        text += f": {exc.what}"
        if exc.file:
            text += f" ({exc.file})"
        if exc.fix:
            text += f"; {exc.fix}"
    print(f"error: {text}", file=sys.stderr)
    return SystemExit(128 + signum)


def _raise_terminated(signum, frame) -> None:
    raise Terminated()


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """While the block runs (main thread only), SIGTERM raises :class:`Terminated` (a KeyboardInterrupt) instead of
    killing the process at once, so ``finally`` blocks remove temporary files and release locks."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    try:
        old = signal.signal(signal.SIGTERM, _raise_terminated)
    except (ValueError, OSError):  # pragma: no cover - not the main interpreter
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def cli_main(main: Callable[..., T]) -> Callable[..., T]:
    """Decorate an entry point ``main(argv=None)``: an expected failure (:func:`as_user_error`) prints one
    ``error:`` line and raises :class:`UserExit` (exit code 2); anything else keeps its traceback. Ctrl-C and
    SIGTERM end with one ``error: interrupted by SIGINT|SIGTERM...`` line and exit code 130 / 143
    (:func:`report_interrupt`; a long command re-raises :func:`interrupted` to say what it kept)."""

    @functools.wraps(main)
    def wrapped(argv: list[str] | None = None, *args: Any, **kwargs: Any) -> T:
        try:
            with sigterm_as_interrupt():
                return main(argv, *args, **kwargs)
        except SystemExit:
            raise
        except KeyboardInterrupt as e:
            raise report_interrupt(e, argv) from None
        except Exception as e:
            user = as_user_error(e)
            if user is None:
                raise
            raise report(user, argv) from None

    return wrapped


def run_cli(main: Callable[..., T], argv: list[str] | None = None) -> T:
    """Call ``main(argv)`` under the convention of :func:`cli_main`."""
    return cli_main(main)(argv)


def require_path(path: str | os.PathLike, what: str, fix: str, kind: str = "any") -> Path:
    """``path`` as a Path if it exists (``kind`` = ``file``, ``dir`` or ``any``), else a :class:`UserError`."""
    p = Path(path)
    ok = p.is_file() if kind == "file" else p.is_dir() if kind == "dir" else p.exists()
    if not ok:
        raise UserError(f"{what} not found", p, fix)
    return p


def json_safe(obj: Any) -> Any:
    """Replace non-finite floats by None (so ``json.dumps`` writes valid JSON), recursively."""
    import math

    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if type(obj).__module__ == "numpy" and hasattr(obj, "item") and getattr(obj, "ndim", 0) == 0:
        return json_safe(obj.item())
    return obj


class _OldSpelling(argparse.Action):
    """An option whose old spellings (``old``) still work and print one line naming the new one. ``mapping`` turns
    an old spelling's value into the new option's (``--text-encoder hash`` -> ``--hash-text``)."""

    def __init__(self, option_strings, dest, old: tuple[str, ...] = (), flag: bool = False,
                 mapping: dict[str, Any] | None = None, use: str | None = None, **kwargs) -> None:
        self.old, self.flag, self.mapping = old, flag, mapping
        self.use = use or next((o for o in option_strings if o not in old), "")
        if flag:
            kwargs["nargs"] = 0
        super().__init__(option_strings, dest, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        if option_string in self.old:
            sys.stderr.write(f"WARNING {option_string} is an old spelling: use {self.use}\n")
        if self.mapping is not None and option_string in self.old:
            values = self.mapping[values]
        setattr(namespace, self.dest, True if self.flag and option_string not in self.old else values)


def add_device_arg(parser, default: str = "auto", what: str = "") -> None:
    """``--device``, the one spelling of the torch device flag of every command; ``what`` says what runs there."""
    parser.add_argument("--device", default=default,
                        help=f"torch device{what}: cpu, cuda, cuda:1, ... or auto (CUDA when present); "
                             f"default {default}")


def add_chunk_size_arg(parser, default: int | None, help: str, old_spelling: bool = False) -> None:
    """``--chunk-size``: frames per backbone pass, in every command that runs the backbone; ``old_spelling``:
    inference.run's old ``--chunk`` is still accepted."""
    old = ("--chunk",) if old_spelling else ()
    parser.add_argument("--chunk-size", *old, dest="chunk_size", type=int, default=default, action=_OldSpelling,
                        old=old, use="--chunk-size (same meaning)",
                        help=help + (" (old spelling: --chunk)" if old else ""))


def add_compute_dtype_arg(parser, default: str | None, help: str, old_spelling: bool = False) -> None:
    """``--compute-dtype``: the precision the networks compute in (``--dtype`` is the storage precision of what a
    command writes, e.g. the token cache); ``old_spelling``: inference.run's old ``--dtype`` is still accepted."""
    old = ("--dtype",) if old_spelling else ()
    parser.add_argument("--compute-dtype", *old, dest="compute_dtype", default=default, action=_OldSpelling,
                        old=old, use="--compute-dtype (same meaning)", choices=("fp32", "bf16", "fp16"),
                        help=help + (" (old spelling: --dtype)" if old else ""))


def add_text_encoder_args(parser, old_text_encoder_flag: bool = False) -> None:
    """The text-encoder flags every command that embeds text shares (built by ``model.text.build_text_encoder``):
    ``--hash-text`` (the weight-free encoder) and the open_clip flags ``--clip tiny|pretrained``,
    ``--clip-model``, ``--clip-pretrained``, ``--clip-weights``, ``--clip-seed``, ``--clip-precision``.
    ``old_text_encoder_flag``: also accept extract_semantics' old ``--text-encoder clip|hash``."""
    g = parser.add_argument_group("text encoder")
    g.add_argument("--hash-text", action=_OldSpelling, flag=True, default=False,
                   help="use the weight-free bag-of-words hash text encoder instead of open_clip (synthetic "
                        "scenes whose targets were made with it; oracle checks)")
    if old_text_encoder_flag:
        g.add_argument("--text-encoder", dest="hash_text", action=_OldSpelling, old=("--text-encoder",),
                       mapping={"hash": True, "clip": False}, choices=["clip", "hash"], default=False,
                       use="--hash-text for the hash encoder; open_clip (the --clip flags) is the default",
                       help="old spelling: --text-encoder hash = --hash-text, --text-encoder clip = the default")
    g.add_argument("--clip", choices=["pretrained", "tiny"], default="pretrained",
                   help="'pretrained' (default) loads --clip-model/--clip-pretrained or --clip-weights; "
                        "'tiny' uses a tiny random open_clip (tests, smoke runs; embeddings are meaningless)")
    g.add_argument("--clip-model", default=CLIP_MODEL, help=f"open_clip architecture name (default {CLIP_MODEL})")
    g.add_argument("--clip-pretrained", default=CLIP_PRETRAINED,
                   help=f"open_clip pretrained tag (default {CLIP_PRETRAINED}, as in 4D LangSplat)")
    g.add_argument("--clip-weights", default=None,
                   help="local weights file (e.g. ckpt/open_clip/ViT-B-16_laion2b_s34b_b88k.bin); overrides the tag")
    g.add_argument("--clip-seed", type=int, default=0, help="seed of the random weights for --clip tiny (and of the "
                   "hash encoder)")
    g.add_argument("--clip-precision", choices=["fp32", "fp16"], default="fp32",
                   help="open_clip precision (fp16 only makes sense on CUDA)")


# ---------------------------------------------------------------- typed command configurations

#: the metadata key under which :func:`option` keeps a dataclass field's command-line declaration
CLI_KEY = "cli"


def option(help: str = "", *, group: str | None = None, names: tuple[str, ...] = (),
           shared: Callable[[Any], None] | None = None, **argparse_kwargs: Any) -> dict[str, Any]:
    """The metadata of a dataclass field that is also a command-line flag (``field(default=..., metadata=option(
    ...))``): its ``help``, the argparse ``group`` it is listed under, its spellings (default ``--<name with
    dashes>``) and any ``argparse_kwargs`` (``choices``, ``nargs``, ``type``, ``required``, ...). The default is the
    field's; ``type`` follows the annotation for ``int`` / ``float`` (``X | None`` too) and a ``bool`` is a switch
    (``store_true``). ``shared``: the flag is declared by that helper of this module (:func:`add_device_arg`,
    :func:`add_logging_args`, ...), called once however many fields name it, so a shared flag keeps one
    declaration; its help comes from the helper. Extra keys (other than ``cli``) can be merged into the dict."""
    return {CLI_KEY: {"help": help, "group": group, "names": names, "shared": shared, "kwargs": argparse_kwargs}}


def _field_default(f: Any) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None


def _scalar_type(hint: Any) -> Any:
    """``int`` / ``float`` from an annotation (``int``, ``float | None``), else None."""
    if hint in (int, float):
        return hint
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) == 1 and args[0] in (int, float):
            return args[0]
    return None


def add_dataclass_args(parser: argparse.ArgumentParser, cls: type) -> None:
    """Declare one flag per field of the dataclass ``cls`` that carries :func:`option` metadata, in field order,
    each under its argparse group (groups are made in the order they first appear)."""
    hints = typing.get_type_hints(cls)
    groups: dict[str, Any] = {}
    called: list[Callable[[Any], None]] = []
    for f in dataclasses.fields(cls):
        spec = f.metadata.get(CLI_KEY)
        if spec is None:
            continue
        target = parser if spec["group"] is None else groups.get(spec["group"])
        if target is None:
            target = groups[spec["group"]] = parser.add_argument_group(spec["group"])
        if spec["shared"] is not None:
            if spec["shared"] not in called:
                spec["shared"](target)
                called.append(spec["shared"])
            continue
        kwargs = dict(spec["kwargs"])
        if not kwargs.get("required"):
            kwargs.setdefault("default", _field_default(f))
        hint = hints[f.name]
        if hint is bool and "action" not in kwargs:
            kwargs["action"] = "store_true"
        elif "type" not in kwargs and "action" not in kwargs and _scalar_type(hint) is not None:
            kwargs["type"] = _scalar_type(hint)
        names = spec["names"] or ("--" + f.name.replace("_", "-"),)
        target.add_argument(*names, dest=f.name, help=spec["help"], **kwargs)


def dataclass_from_args(cls: type[T], args: argparse.Namespace) -> T:
    """The dataclass ``cls`` from parsed flags (every field by name; a field the namespace lacks keeps its
    default)."""
    names = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
    return cls(**{n: getattr(args, n) for n in names if hasattr(args, n)})


class OptionError(UserError, TypeError):
    """A keyword option that is no field of the config built from keywords (:func:`dataclass_from_options`): a
    TypeError, as for any unexpected keyword argument, and a :class:`UserError` (one line in a command)."""


class OptionValueError(UserError, ValueError):
    """A keyword option's value that its flag would refuse on the command line (not a number, not one of the
    choices, a value for a switch)."""


def dataclass_from_options(cls: type[T], options: dict[str, Any], exclude: tuple[str, ...] = (),
                           caller: str = "options") -> T:
    """The dataclass ``cls`` (fields declared with :func:`option`) from keyword options named after its flags
    (``chunk_size=4``, ``no_geometry=True``), read exactly as the command line reads them: None or False leaves the
    field's default, True turns a switch on, any other value is read as its text (``str(value)``) through the
    flag's type and choices. A name that is no flag of ``cls`` (or is in ``exclude``) raises :class:`OptionError`
    naming it and listing the valid ones; a value the flag refuses raises :class:`OptionValueError`; ``caller``
    names who got them (``predict()``)."""
    parser = argparse.ArgumentParser(add_help=False)
    add_dataclass_args(parser, cls)
    actions = {a.dest: a for a in parser._actions if a.dest not in exclude}
    valid = [f.name for f in dataclasses.fields(cls) if f.name in actions]  # type: ignore[arg-type]
    values: dict[str, Any] = {}
    for name, value in options.items():
        action = actions.get(name)
        if action is None:
            raise OptionError(f"{caller} got an unexpected option {name!r}", None,
                              f"use one of {', '.join(valid)}")
        if value is None or value is False:
            continue
        if action.nargs == 0:  # a switch
            if value is not True:
                raise OptionValueError(f"{caller}: option {name}={value!r} is a switch", None,
                                       f"pass {name}=True (or False / None to leave it off)")
            values[name] = True
            continue
        if value is True:
            raise OptionValueError(f"{caller}: option {name} takes a value, not True", None,
                                   f"pass {name}=<value> as on the command line")
        several = action.nargs in ("+", "*") or (isinstance(action.nargs, int) and action.nargs > 1)
        texts = [str(v) for v in value] if several and isinstance(value, (list, tuple)) else [str(value)]
        read = [_read_option(action, name, text, caller) for text in texts]
        values[name] = read if several else read[0]
    return cls(**values)


def _read_option(action: argparse.Action, name: str, text: str, caller: str) -> Any:
    """``text`` read as the command line reads ``--<flag> text``: the action's type, then its choices."""
    try:
        value = action.type(text) if callable(action.type) else text
    except (ValueError, TypeError, argparse.ArgumentTypeError) as e:
        raise OptionValueError(f"{caller}: option {name}={text!r} is not valid ({e})", None,
                               f"pass a value --{name.replace('_', '-')} takes") from None
    if action.choices is not None and value not in action.choices:
        raise OptionValueError(f"{caller}: option {name}={text!r} is not one of {', '.join(map(str, action.choices))}",
                               None, "pass one of them")
    return value
