"""The command-line parsers: src.report's and src.predict's (argparse's, with a bad command line told in
one line, as every other refusal of this project is, exit 2: argparse prints its usage block, four
lines for src.report, and then the error; a log or a cluster's job output kept only the usage's end),
and src.train's Hydra flags, read before Hydra runs."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import NoReturn

from src.config import ConfigError


class OneLineParser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (usage: {self.prog} --help)\n")


def hydra_args() -> argparse.ArgumentParser:
    """The command line as Hydra 1.3's `@hydra.main` reads it (flags, then overrides), for precheck:
    Hydra's own parser is private (hydra._internal.utils.get_args_parser), so this adapter names its
    flags again; tests/test_gate.py holds it to Hydra's, flag by flag."""
    parser = argparse.ArgumentParser(add_help=False)
    for flags in ("--help -h", "--hydra-help", "--version", "--resolve", "--run -r", "--multirun -m", "--shell-completion -sc"):
        parser.add_argument(*flags.split(), action="store_true")
    for flags in ("--cfg -c", "--package -p", "--config-path -cp", "--config-name -cn", "--config-dir -cd", "--experimental-rerun"):
        parser.add_argument(*flags.split())
    parser.add_argument("--info", "-i", nargs="?", const="all")
    parser.add_argument("overrides", nargs="*")
    return parser


def check_commands(args: argparse.Namespace) -> None:
    """One of Hydra's commands at a time (`-m --cfg job` to see a multirun's config): Hydra refuses two with a
    ValueError raised outside its error report, a traceback and exit 1; here one line, exit 2."""
    commands = [flag for flag, given in (("--run", args.run), ("--multirun", args.multirun), ("--cfg", args.cfg is not None),
                                         ("--info", args.info is not None), ("--shell-completion", args.shell_completion)) if given]
    if len(commands) > 1 and not (args.help or args.hydra_help):  # Hydra's ValueError was a traceback, exit 1
        raise ConfigError(f"{' and '.join(commands)}: give only one of --run, --multirun, --cfg, --info and --shell-completion")


def check_config_dir(args: argparse.Namespace, conf: Path, app: Path) -> None:
    """Refuse a `--config-dir` whose primary config (`--config-name`, `config` by default) the app's own
    `conf/` also holds: Hydra searches a --config-dir after the app's config path, so the command would
    compose conf/config.yaml, the defaults, and train them in silence. Seen: `--config-dir RUN
    --config-name config`, to run a kept run's config.yaml again. A --config-dir that adds configs of its
    own (a strategy, a preset) is Hydra's to read, as it is. And a relative `--config-path` that is not
    there: Hydra reads it against the app's folder (`app`, src/), not the current one, and said so in 3 lines."""
    if args.config_path is not None and not Path(args.config_path).is_absolute() \
            and not (app / args.config_path).is_dir():
        given = Path(args.config_path).absolute()
        raise ConfigError(f"--config-path {args.config_path}: Hydra reads a relative path against {app}, where it is not; "
                          f"give it whole: --config-path {given}")
    if args.config_dir is None or args.config_path is not None:
        return
    name = args.config_name or "config"
    file = name if name.endswith(".yaml") else f"{name}.yaml"
    given = Path(args.config_dir).expanduser().absolute()
    if not given.is_dir():  # Hydra said so in 3 lines, exit 1
        raise ConfigError(f"--config-dir {args.config_dir}: no such folder ({given})")
    if (given / file).is_file() and (conf / file).is_file():
        raise ConfigError(f"--config-dir {args.config_dir}: its {file} would not be read (Hydra takes src.train's own "
                          f"conf/{file} first, the defaults); to run that file: --config-path {given} --config-name {name}")


def resolvable_cfg(argv: list[str]) -> list[str]:
    """`--cfg hydra --resolve [-p hydra.X]` as `--cfg all --resolve -p hydra[.X]`, else `argv` as it is. Hydra
    cuts the `hydra` node from the config before it resolves it, so `hydra.run.dir`'s `${paths.output_dir}`
    (conf/config.yaml) was a 40-line InterpolationKeyError traceback; selected from the whole config, the
    node resolves as the run will (the folder printed is claimed and released, as `--cfg all --resolve` does)."""
    args, unknown = hydra_args().parse_known_args(argv)
    if args.cfg != "hydra" or not args.resolve or unknown or not (args.package or "hydra").startswith("hydra"):
        return argv
    flags = [f"--{name.replace('_', '-')}" for name in ("help", "hydra_help", "version", "run", "multirun")
             if getattr(args, name)]
    values = {"--config-path": args.config_path, "--config-name": args.config_name, "--config-dir": args.config_dir,
              "--info": args.info, "--experimental-rerun": args.experimental_rerun}
    given = [part for flag, value in values.items() if value is not None for part in (flag, value)]
    return [*flags, *given, "--cfg", "all", "--resolve", "--package", args.package or "hydra", *args.overrides]
