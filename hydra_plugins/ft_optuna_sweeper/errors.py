"""The sweeper's one error for a setting that cannot run: its message is one line naming the key.

An application may subclass it for its own settings (this project's src.config.ConfigError does),
so one `except SettingError` sees both. Imports nothing: Hydra imports every module of
`hydra_plugins` when it scans for plugins."""

# Hydra's plugin scan executes every module of hydra_plugins again, in place, even one already
# imported: a second SettingError class would neither catch nor be the first one's instances (nor
# its subclasses', such as ConfigError). The class is made once per process.
if "SettingError" not in globals():

    class SettingError(ValueError):
        """A `hydra.sweeper.*` value (or a search space) that cannot run, said in one line naming the key."""
