"""The systems a report compares: each a run, a results or validation directory, or a
translations file, and runs that differ only in --seed one system (as the results table and
the significance command group them). All must have scored the same sentences."""
from dataclasses import dataclass
from pathlib import Path

from sonar_t5.common.errors import UserError
from sonar_t5.common.schemas import read_summary

from ..report import system_name
from ..significance import (check_same_sentences, find_outputs, group_by_seed, read_outputs,
                            scored_split)
from ..table import group_name


@dataclass
class System:
    name: str
    files: list  # each seed's translations.txt, in seed order
    hypotheses: list  # each seed's translations, in the sentences' order
    summary: dict  # the first seed's validation_summary.json ({} where there is none)

    @property
    def shown(self):
        """The translations the sentence table shows: the first seed's."""
        return self.hypotheses[0]

    @property
    def pooled(self):
        """Every seed's translations one after another (references repeated alike)."""
        return [h for seed in self.hypotheses for h in seed]


def load_systems(paths, split="test", group_seeds=True):
    """-> (ids, references, [System]) in the order given, seed groups at their first run's
    place. Refuses systems scored on other sentences, and two systems of one name."""
    groups = group_by_seed(paths, split) if group_seeds else [[p] for p in paths]
    outputs = {p: read_outputs(p, split) for group in groups for p in group}
    every = [p for group in groups for p in group]
    check_same_sentences([(p, outputs[p]) for p in every],
                         {p: scored_split(p, split) for p in every})
    systems = []
    for group in groups:
        files = [find_outputs(p, split) for p in group]
        names = [name_of(p, f) for p, f in zip(group, files)]
        summary = files[0].with_name("validation_summary.json")
        systems.append(System(names[0] if len(group) == 1 else group_name(names), files,
                              [outputs[p][2] for p in group],
                              read_summary(summary) if summary.is_file() else {}))
    seen = {}
    for system in systems:
        if system.name in seen:
            raise UserError(f"two systems are both named '{system.name}' (their run "
                            "directories' names)", f"{seen[system.name]} and {system.files[0]}",
                            "give the runs directories of different names")
        seen[system.name] = system.files[0]
    ids, references, _ = outputs[every[0]]
    return ids, references, systems


def name_of(path, translations):
    """A system's name: its run directory's, else the folder it was given as (or that holds
    the translations file given)."""
    name = system_name(translations)
    if name != translations.name:
        return name
    return Path(path).name if Path(path).is_dir() else translations.parent.name

