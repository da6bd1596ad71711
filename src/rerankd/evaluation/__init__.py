"""Quality on the user's own labelled data: `rerankd eval` and `rerankd calibrate`.

Built on the field's libraries: bm25s for the first stage, ir-measures for the metrics, scipy for the
paired tests, the bootstrap and Platt scaling, matplotlib for the reports (the `rerankd[eval]` extra).
"""
