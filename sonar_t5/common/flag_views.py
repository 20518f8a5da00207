"""Frozen views of the parsed flags: a function that reads a few flags takes the view of
those few, so its signature says what it reads (and it cannot change a flag).

    @dataclass(frozen=True)
    class LoaderSettings(FlagView):
        batch_size: int
        num_workers: int

    make_loaders(LoaderSettings.from_args(args), ...)
"""
from dataclasses import fields


class FlagView:
    @classmethod
    def from_args(cls, args):
        """The fields of this view, by name, from the parsed flags (a namespace) or a dict
        of them (a checkpoint's train_args)."""
        given = args if isinstance(args, dict) else vars(args)
        return cls(**{f.name: given[f.name] for f in fields(cls)})
