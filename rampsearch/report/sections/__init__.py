"""The report's sections; each reads RunData and adds headings, text, tables and figures to a Document.

Conventions every section keeps:
- The retraining is named after its recipe (`retrain_name`): "full" only for the paper recipe at
  its own epochs, otherwise e.g. "6-epoch proxy retrain"; column headers and the verdict use it.
- A trial *counts* (best so far, Pareto front, top trials) when it is COMPLETE and within every
  budget constraint of the space; over-budget, pruned and failed candidates never do.
- Accuracy in a trial table is the accuracy objective's value (`value`, or `value_I` when the
  search had several objectives).
- Normalized depth: block b of n sits at (b + 0.5) / n; stage s ends at (depths[0] + ... +
  depths[s]) / n, where a dashed line marks the boundary on every depth axis.
- Every schedule keeps one colour across figures, the hand-set ramp black; a seed band has its
  line's colour; a legend lists only what is drawn and sits outside the axes, and figures use
  constrained layout, so no label is covered or cut.
- With one seed there is no ± and no test ("no test (1 seed)"); a test is named as run ("paired
  t" when both schedules ran the same seeds, "Welch t" otherwise).

One module per section or family of sections: `summary` (Summary), `ramps` (Ramp, Transfer),
`search` (Search), `fidelity` (Proxy or transfer fidelity), `training` (Training curves, Frequency
analysis), `metadata` (Run metadata); `common` holds what they share. A new section is a function
`name_section(doc, data)` in one of them (or a new module), exported here and called in order by
rampsearch.report.build_report.
"""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # files only, no display; before any section module imports pyplot

from .fidelity import proxy_fidelity_section  # noqa: E402
from .metadata import metadata_section  # noqa: E402
from .ramps import ramp_section, transfer_section  # noqa: E402
from .search import search_section  # noqa: E402
from .summary import summary_section  # noqa: E402
from .training import frequency_section, training_curves_section  # noqa: E402

__all__ = ["frequency_section", "metadata_section", "proxy_fidelity_section", "ramp_section", "search_section",
           "summary_section", "training_curves_section", "transfer_section"]
