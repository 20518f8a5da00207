"""The qualitative analysis report: `python -m sonar_t5.evaluation.analysis` (see __main__.py).

systems.py reads the outputs, breakdown.py counts, page.py gathers and renders through
report.html.j2, attention_maps.py adds a checkpoint's attention."""
