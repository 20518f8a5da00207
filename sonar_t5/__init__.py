"""sonar-t5: sign-language features -> SONAR encoder -> Perceiver Resampler -> T5 decoder.

The four scripts of the checkout (train_sonar_with_t5.py, validate_perceiver_model.py,
plot_training_curves.py, test_perceiver_architecture.py) use this package; installed
(`pip install -e .` in the checkout), a notebook anywhere can too:

    from sonar_t5 import load_translator
    translator = load_translator("runs/demo/best_model.pt")   # or an exported folder
    translator.translate(arrays)                             # [str], one per feature array

Its packages import one way: common <- models, data <- evaluation <- training.
"""


def __getattr__(name):
    # Imported on first use, so that `import sonar_t5.common.errors` stays light.
    if name == "load_translator":
        from .evaluation.translate import load_translator
        return load_translator
    raise AttributeError(f"module 'sonar_t5' has no attribute {name!r}")


__all__ = ["load_translator"]
