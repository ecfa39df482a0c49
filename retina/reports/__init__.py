"""Reports: what an evaluation, an export or a run's checkpoints look like to a reader.

    tables            numbers, intervals and Markdown tables (every report uses them)
    figures           the evaluation's plots; ``save_figure`` for every plot
    report_md         ``report.md``
    report_html       ``report.html`` in the order of TRIPOD+AI and CLAIM
    referral_curves   the referral section and plots
    shift_comparison  in-domain and shifted data side by side
    model_card        ``model_card.md`` beside an exported model
    provenance        the facts reports give about data flow, split and reproducibility
    integrity         a run's checkpoints, each verified (``python -m retina.checkpoints``)

It reads results (metrics, predictions, run folders) and writes documents: it may import
``uncertainty`` (the referral vocabulary), ``models`` (how a head calls a grade),
``checkpoint``, ``data``, ``metrics`` and the foundations; no other job package.
"""
