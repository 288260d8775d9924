"""The reports under their old name: they live in :mod:`mlstm4reco.study.report` and
:mod:`mlstm4reco.study.curves`."""

from mlstm4reco.study.curves import (  # noqa: F401
    curve_rows,
    curve_tests,
    mean_curve,
    write_curve_report,
    write_curves_comparison,
)
from mlstm4reco.study.report import (  # noqa: F401
    comparisons,
    csv_text,
    describe_test,
    markdown_table,
    paired_line,
    paired_test,
    plot_comparison,
    plot_search,
    reproduction_rows,
    write_reproduction_report,
    write_search_report,
)
