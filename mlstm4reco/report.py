"""The reports under their old name: they live in :mod:`mlstm4reco.study.report`."""

from mlstm4reco.study.report import (  # noqa: F401
    comparisons,
    csv_text,
    curve_rows,
    curve_tests,
    describe_test,
    markdown_table,
    mean_curve,
    paired_line,
    paired_test,
    plot_comparison,
    plot_search,
    reproduction_rows,
    write_curve_report,
    write_curves_comparison,
    write_reproduction_report,
    write_search_report,
)
