"""Two training runs on the same CPU cores: epoch time alone, side by side before and after
the shared-CPU default (sonar_t5/common/cpu.py).

    python -m benchmarks.cpu_sharing        # about 12 minutes on 2 cores

Each run is one demo epoch (3,000 samples). "Before": both runs keep GNU OpenMP's default
wait policy (SONAR_T5_CPU_SHARING=off, what the toolkit did before it chose). "After": the
other job still keeps the default (a job that is not ours), ours starts second, sees it, and
waits passively. "Both after": two of ours, the second one adapting. And, for the record,
"explicit spin": both with GOMP_SPINCOUNT=300000, the spin count libgomp's documentation gives
as its default; set explicitly it also turns off libgomp's own throttling for more threads
than CPUs, the worst case.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from sonar_t5.data.synthetic import demo_paths, make_demo_data

LIBRARY_DEFAULT = {"SONAR_T5_CPU_SHARING": "off"}  # OpenMP's default wait policy, as before
EXPLICIT_SPIN = {"GOMP_SPINCOUNT": "300000"}


def start(data, out, env_extra):
    paths = demo_paths(data)
    command = [sys.executable, "train_sonar_with_t5.py", "--demo", "--epochs", "1",
               "--output_dir", str(out),
               "--train_features", str(paths["train"][0]), "--train_manifest", str(paths["train"][1]),
               "--val_features", str(paths["val"][0]), "--val_manifest", str(paths["val"][1])]
    env = {k: v for k, v in os.environ.items()
           if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "SONAR_T5_CPU_SHARING")}
    return subprocess.Popen(command, env={**env, **env_extra}, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)


def epoch_time(proc, out):
    stdout, _ = proc.communicate()
    if proc.returncode:
        raise RuntimeError(f"run failed: {stdout[-2000:]}")
    return json.loads((Path(out) / "training_history.json").read_text())[0]["epoch_time_s"], \
        "OMP_WAIT_POLICY=PASSIVE" in stdout


def pair(data, root, name, first_env, second_env):
    """The first run starts; once it trains, the second starts beside it."""
    a, b = root / f"{name}_first", root / f"{name}_second"
    first = start(data, a, first_env)
    time.sleep(6)  # data, tokenizer and model built: the first run is training
    second = start(data, b, second_env)
    (t_b, passive_b), (t_a, _) = epoch_time(second, b), epoch_time(first, a)
    return {"first_epoch_s": t_a, "second_epoch_s": t_b, "second_chose_passive": passive_b}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--output", default="benchmarks/cpu_sharing_results.json")
    args = p.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="sonar_t5_sharing_"))
    data = make_demo_data(root / "data", seed=0)
    alone = start(data, root / "alone", {})
    r = {"cpus": os.cpu_count(), "alone_epoch_s": epoch_time(alone, root / "alone")[0]}
    r["before"] = pair(data, root, "before", LIBRARY_DEFAULT, LIBRARY_DEFAULT)
    r["after"] = pair(data, root, "after", LIBRARY_DEFAULT, {})
    r["both_after"] = pair(data, root, "both_after", {}, {})
    r["explicit_spin"] = pair(data, root, "explicit_spin", EXPLICIT_SPIN, EXPLICIT_SPIN)
    for case in ("before", "after", "both_after", "explicit_spin"):
        c = r[case]
        c["slowdown_first"] = c["first_epoch_s"] / r["alone_epoch_s"]
        c["slowdown_second"] = c["second_epoch_s"] / r["alone_epoch_s"]
        print(f"{case:<13} other job {c['first_epoch_s']:6.1f} s ({c['slowdown_first']:.1f}x), "
              f"ours {c['second_epoch_s']:6.1f} s ({c['slowdown_second']:.1f}x)"
              f"{', passive' if c['second_chose_passive'] else ''}")
    print(f"alone {r['alone_epoch_s']:.1f} s an epoch; sharing fairly would be 2.0x")
    Path(args.output).write_text(json.dumps(r, indent=2) + "\n")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
