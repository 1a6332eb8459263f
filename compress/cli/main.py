"""The `compress` command line. Heavy imports happen inside commands so `--help` stays instant."""

from __future__ import annotations

import contextlib
import functools
import importlib
import importlib.util
import os
import select
import sys
import traceback

import click

from compress import __version__, environment
from compress.errors import CompressError

DEBUG_ENV = environment.DEBUG_ENV

# The commands that continue from their last finished stage or epoch when run again after a stop.
RESUMABLE = frozenset({"slim", "train", "finetune"})
# Commands that live in their own modules: (module, attribute).
PLUGIN_COMMANDS = {
    "train": ("compress.cli.train", "train"),
    "prune": ("compress.cli.prune", "prune_cmd"),
    "finetune": ("compress.cli.finetune", "finetune"),
    "slim": ("compress.cli.slim", "slim"),
    "eval": ("compress.cli.evaluate", "eval_cmd"),
    "info": ("compress.cli.info", "info"),
    "import": ("compress.cli.import_weights", "import_cmd"),
    "export": ("compress.cli.export", "export"),
    "quantize": ("compress.cli.quantize", "quantize"),
    "share": ("compress.cli.share", "share"),
    "bench": ("compress.cli.bench", "bench"),
}



class Main(click.Group):
    """Turns unexpected exceptions into one line unless COMPRESS_DEBUG=1 asks for the traceback."""

    def list_commands(self, ctx):
        present = {n for n, (module, _) in PLUGIN_COMMANDS.items() if importlib.util.find_spec(module)}
        return sorted(set(super().list_commands(ctx)) | present)

    def get_command(self, ctx, name):
        cmd = super().get_command(ctx, name)
        if cmd is None and name in PLUGIN_COMMANDS:
            module, attr = PLUGIN_COMMANDS[name]
            try:
                cmd = getattr(importlib.import_module(module), attr)
            except ImportError as exc:
                raise CompressError(missing_module_message(name, exc)) from None
        return _environment_checked(cmd) if cmd is not None else None

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except click.UsageError as exc:
            # One line that names the option at fault; `--help` shows the usage.
            click.echo(f"Error: {one_line(exc.format_message())}", err=True)
            sys.exit(exc.exit_code)
        except (click.ClickException, click.Abort, click.exceptions.Exit, SystemExit):
            raise
        except _user_errors() as exc:
            if _debug():
                traceback.print_exc()
            click.echo(f"Error: {one_line(exc)}", err=True)
            sys.exit(2)
        except ImportError as exc:
            if _debug():
                traceback.print_exc()
            click.echo(f"Error: {missing_module_message(ctx.invoked_subcommand, exc)}", err=True)
            sys.exit(2)
        except KeyboardInterrupt:
            resumes = ctx.invoked_subcommand in RESUMABLE
            click.echo("interrupted" + ("; re-run the same command to continue" if resumes else ""), err=True)
            sys.exit(130)
        except BrokenPipeError as exc:
            if _stdout_closed():
                _quiet_closed_stdout()
            _unexpected(exc)
        except Exception as exc:  # noqa: BLE001 - the last line of defence for a CLI
            _unexpected(exc)


def _debug() -> bool:
    """COMPRESS_DEBUG=1; a mistyped value is refused before the command runs, so here it only means off."""
    try:
        return environment.debug()
    except CompressError:
        return False


def _environment_checked(cmd: click.Command) -> click.Command:
    """`cmd` with a mistyped COMPRESS_* value refused once its options are parsed, before any work (its
    `--help` still shows)."""
    callback = cmd.callback
    if callback is not None and not getattr(callback, "checks_environment", False):
        @functools.wraps(callback)
        def checked(*args, **kwargs):
            environment.check()
            return callback(*args, **kwargs)

        checked.checks_environment = True
        cmd.callback = checked
    return cmd


def _unexpected(exc: BaseException) -> None:
    if _debug():
        traceback.print_exc()
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    click.echo(f"Error: {type(exc).__name__}: {first} (set {DEBUG_ENV}=1 for the traceback)", err=True)
    sys.exit(1)


def _stdout_closed() -> bool:
    """Whether the pipe stdout writes into has lost its reader (poll reports an error on its write end),
    as opposed to some other pipe of the command breaking."""
    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(events & (select.POLLERR | select.POLLHUP) for _, events in poller.poll(0))
    except (OSError, ValueError, AttributeError):  # no poll on this platform, or stdout has no descriptor
        return True


def _quiet_closed_stdout() -> None:
    """The reader of stdout went away (`compress info m | head -3`): nothing is wrong with the command, so no
    error line; stdout is pointed at /dev/null so that the interpreter's last flush at exit cannot print
    "Exception ignored ... BrokenPipeError". The exit status is a SIGPIPE death's (128 + 13), as for `cat`."""
    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    sys.exit(141)


def _user_errors() -> tuple[type[Exception], ...]:
    """Exceptions that name a problem with the user's input: printed as one line, exit status 2."""
    kinds: list[type[Exception]] = [CompressError]
    for module, name in (("compress.exporting.errors", "ExportError"), ("compress.runtime.errors", "RuntimeBenchError")):
        try:
            kinds.append(getattr(importlib.import_module(module), name))
        except ImportError:
            pass
    return tuple(kinds)


TRAIN_MODULES = ("torch", "torchvision", "torch_pruning", "safetensors", "PIL", "onnxscript", "onnxconverter_common")


def missing_module_message(command: str | None, exc: ImportError) -> str:
    """One line naming the extra that provides the missing module (the core install has no torch)."""
    missing = (exc.name or "").split(".")[0]
    if missing in TRAIN_MODULES:
        return (f"command {command!r} needs {missing}, which is not installed (the core install runs ONNX files "
                f'only): pip install "cnn-compress[train]"')
    return f"command {command!r} is unavailable: {one_line(exc)}"


def one_line(exc: BaseException | str) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


TRUST_ENV = environment.TRUSTED_CODE_ENV  # read by compress.models.trust (not imported here: it needs torch)


def _trust(_ctx, _param, modules):
    """--trust adds to the environment variable, so workers this command starts trust the same code."""
    for module in modules:
        if not environment.is_import_entry(module):
            raise click.BadParameter(f"{module!r} is not a module name (package.module[:Name])")
    if modules:
        current = [m for m in os.environ.get(TRUST_ENV, "").split(",") if m.strip()]
        os.environ[TRUST_ENV] = ",".join(dict.fromkeys([*current, *modules]))


@click.group(cls=Main, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(__version__, prog_name="compress")
@click.option("--trust", multiple=True, metavar="MODULE", callback=_trust, expose_value=False,
              help="Let model directories name code from MODULE (package, package.module or package.module:Name); "
                   "repeatable. See docs/SECURITY.md.")
def main():
    """Slim, compress, export and benchmark convolutional networks.

    \b
    Quick start (a few minutes on a laptop CPU):
      compress slim
    The paper's VGG-19 recipe (GPU):
      compress slim --preset paper --arch vgg19 --data cifar10 --out runs/vgg19-paper
    """


if __name__ == "__main__":
    main()
