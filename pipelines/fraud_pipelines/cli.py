"""Pipeline subcommands (filled in below)."""


def register(commands, bench) -> None:
    pass
