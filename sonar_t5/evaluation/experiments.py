"""Which runs are one experiment repeated: the results table makes them one row, the
curves one band, the significance tests one system."""
import json

# Flags that do not change what a run learns: runs that differ only in these are repeats of
# one experiment, and then a seed group if their seeds differ.
BOOKKEEPING_ARGS = {"seed", "output_dir", "resume", "overwrite", "config", "report_to",
                    "log_every", "encoder_cache_dir", "num_workers", "num_threads",
                    "skip_final_scoring", "test_features", "test_manifest"}


def experiment_key(config):
    """The run's resolved flags less seed and bookkeeping; paths inside the run's own
    directory (--demo's data) made relative to it."""
    args = config["args"]
    own = str(args.get("output_dir") or "")

    def relative(value):
        if own and isinstance(value, str) and value.startswith(own):
            return "<run>" + value[len(own):]
        return value

    return json.dumps({k: relative(v) for k, v in args.items() if k not in BOOKKEEPING_ARGS},
                      sort_keys=True, default=str)


def seed_groups(items, key_of, seed_of):
    """-> lists of items, in first-seen order: items with the same key and distinct seeds
    together; an item whose seed its group already has starts a row of its own."""
    groups = []
    for item in items:
        group = next((g for g in groups if key_of(g[0]) == key_of(item)
                      and seed_of(item) not in map(seed_of, g)), None)
        if group is None:
            groups.append([item])
        else:
            group.append(item)
    return groups
