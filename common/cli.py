"""argparse help that shows defaults, except for flags that are unset unless given."""
import argparse


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    def _get_help_string(self, action):
        if action.default in (None, False):  # None: falls back elsewhere; False: a switch
            return action.help
        return super()._get_help_string(action)
